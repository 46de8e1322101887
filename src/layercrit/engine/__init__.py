"""Engine: what to measure (config, plan), computing it (evaluate, metrics, the cached graph), recording
it (recorder) and where it runs (executor). Imports nothing from ``layercrit.scale`` or the CLI."""
from .config import MeasureConfig
from .evaluate import evaluate, kept_as_found
from .executor import Executor, LocalExecutor, resolve_device
from .measure import measure, measure_models
from .metrics import BaselineMetrics, ResetMetrics
from .plan import Job, JobKey, MeasurePlan, Row, plan_measurement
from .recorder import Recorder, Run

__all__ = ["BaselineMetrics", "Executor", "Job", "JobKey", "LocalExecutor", "MeasureConfig", "MeasurePlan",
           "Recorder", "ResetMetrics", "Row", "Run", "evaluate", "kept_as_found", "measure", "measure_models",
           "plan_measurement", "resolve_device"]
