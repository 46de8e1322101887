"""What travels between the Ray driver and its workers: plain dataclasses, no nested dicts.

Object references (``ray.ObjectRef``) sit inside these dataclasses, so Ray does not resolve them
when it passes a payload to a task: the worker fetches them itself, once per model or data set.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...data import DataOrigin
from ...engine import JobKey, MeasureConfig, Row
from ...models import ModelSource
from ...resets import Reset, Unit


@dataclass(frozen=True)
class ModelPayload:
    """The model of a task: rebuilt from its source inside the worker, or fetched from the object store."""

    key: str  # identifies the model: a worker keeps the last one it loaded
    spec: str  # for messages
    weights_sha256: str  # what the driver measured: a rebuilt model must have exactly these weights
    source: ModelSource | None = None  # rebuild with create_model (paths absolute, as the driver sees them)
    ref: Any = None  # else a ray.ObjectRef of the ModelBundle


@dataclass(frozen=True)
class ShippedData:
    """Evaluation data as it goes through the object store (numpy arrays: shared, not copied, on a node)."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    source: str


@dataclass(frozen=True)
class DataPayload:
    """The data of a task: loaded from a folder every node sees, or fetched from the object store."""

    fingerprint: str  # identifies the images: a worker keeps the last set it loaded
    origin: DataOrigin | None = None  # load_data(...) again inside the worker (data mode "path")
    ref: Any = None  # else a ray.ObjectRef of a ShippedData


@dataclass(frozen=True)
class JobPayload:
    unit: Unit
    reset: str  # the reset's name (the driver's)
    trial: int
    state: dict | None = None  # running sums saved by an earlier, interrupted run


@dataclass(frozen=True)
class TaskPayload:
    """One task: a group of one model's units, for one trial, with every reset."""

    model: ModelPayload
    data: DataPayload
    resets: list[Reset]  # unprepared (Reset.portable: paths absolute, named as the driver names them)
    config: MeasureConfig
    device: str  # "cpu" or "cuda": Ray gives the task its GPU
    threads: int  # torch threads in the task (on the CPU: the driver's count, for the same numbers)
    jobs: list[JobPayload]


@dataclass(frozen=True)
class TaskResult:
    rows: list[Row]
    base: dict[str, float]  # the unmodified model's metrics over all images
    host: str
    pid: int
    seconds: float  # wall-clock time of the task inside its worker

    def keys(self) -> list[JobKey]:
        return [(r["layer"], r["reset"], r["trial"]) for r in self.rows]
