"""Executors: where a measurement's jobs run. ``LocalExecutor`` runs them in this process.

An executor takes prepared plans and a :class:`~layercrit.engine.recorder.Recorder` and returns one
table per plan; it records through the recorder only, so every executor writes the same rows. Other
executors live outside the engine (``layercrit.scale.ray.RayExecutor``) and implement the same
protocol; the engine never imports them.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Protocol

import pandas as pd
import torch

from ..errors import ConfigError, LayercritError
from .evaluation import evaluate
from .plan import MeasurePlan
from .recorder import Recorder


class Executor(Protocol):
    def check(self, device: str | torch.device) -> torch.device:
        """Refuse a ``device`` this executor cannot measure on, before anything is loaded; return the
        device on which this process prepares (probes) the plans."""
        ...

    def run(self, plans: Iterable[MeasurePlan], recorder: Recorder, *, progress: bool) -> list[pd.DataFrame]:
        """Measure every plan (``plans`` may be a generator: plans are prepared as they are needed), record
        through ``recorder``, and return each plan's table, in order."""
        ...


class LocalExecutor:
    """Every job in this process, on the plan's device, one model after another."""

    def check(self, device: str | torch.device) -> torch.device:
        return resolve_device(device)

    def run(self, plans: Iterable[MeasurePlan], recorder: Recorder, *, progress: bool) -> list[pd.DataFrame]:
        tables = []
        for plan in plans:
            run = recorder.start(plan)
            rows, base = evaluate(plan.bundle, plan.data, run.todo, plan.config, device=plan.device,
                                  on_batch=functools.partial(recorder.save, run),
                                  progress=progress, desc=plan.model_id)
            assert len(rows) == len(run.todo)  # every job finished, and was recorded by on_batch
            tables.append(recorder.finish(run, base))
        return tables


def resolve_device(name: str | torch.device) -> torch.device:
    """``name`` as a torch device that exists here; a LayercritError naming the fix otherwise."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LayercritError(f"unknown device {name}: use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name} is not available here (no CUDA GPU): use {{device}} cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise LayercritError(f"device {name} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name} is not available here (no Apple GPU): use {{device}} cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise LayercritError(f"unknown device {name}: use cpu, cuda, cuda:N or mps")
    return device
