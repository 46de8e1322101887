"""Engine: what to measure (config, plan), computing it (evaluate, metrics, the cached graph), recording
it (recorder) and where it runs (executor). Imports nothing from ``layercrit.scale`` or the CLI.

The names below are imported on first use (PEP 562): ``layercrit.engine.config`` (``MeasureConfig``, the
table the command line builds its flags from) is importable without PyTorch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import MeasureConfig

if TYPE_CHECKING:
    from ..models.state import kept_as_found
    from .evaluation import evaluate
    from .executor import Executor, LocalExecutor, resolve_device
    from .measuring import measure, measure_models
    from .metrics import BaselineMetrics, ResetMetrics
    from .plan import Job, JobKey, MeasurePlan, Row, plan_measurement
    from .recorder import Recorder, Run

_LAZY = {"evaluate": ".evaluation", "kept_as_found": "..models.state", "Executor": ".executor",
         "LocalExecutor": ".executor", "resolve_device": ".executor", "measure": ".measuring",
         "measure_models": ".measuring", "BaselineMetrics": ".metrics", "ResetMetrics": ".metrics", "Job": ".plan",
         "JobKey": ".plan", "MeasurePlan": ".plan", "Row": ".plan", "plan_measurement": ".plan",
         "Recorder": ".recorder", "Run": ".recorder"}

__all__ = ["BaselineMetrics", "Executor", "Job", "JobKey", "LocalExecutor", "MeasureConfig", "MeasurePlan",
           "Recorder", "ResetMetrics", "Row", "Run", "evaluate", "kept_as_found", "measure", "measure_models",
           "plan_measurement", "resolve_device"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value
