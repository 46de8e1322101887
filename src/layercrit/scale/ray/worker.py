"""The worker side: run one task's jobs with the engine's own evaluation (same batches, same numbers).

Plain Python: Ray runs :func:`run_task` inside its workers, and it is callable without Ray too.
Workers keep the last model and data set they loaded, so the next task of the same model on that
worker loads nothing.
"""
from __future__ import annotations

import os
import socket
import time
import warnings
from typing import Any

import torch

from ...data import EvalData
from ...engine import Job, evaluate, resolve_device
from ...engine.metrics import ResetMetrics
from ...errors import LayercritError
from ...models import ModelBundle, build_source
from ...resets import Reset, ResetContext
from .payload import DataPayload, ModelPayload, ShippedData, TaskPayload, TaskResult

_MODEL: list[tuple[str, ModelBundle]] = []  # the last model this worker process loaded (key, bundle)
_DATA: list[tuple[str, EvalData]] = []  # likewise the last data set (fingerprint, data)


def run_task(payload: TaskPayload) -> TaskResult:
    """Evaluate one task's jobs; runs inside a Ray worker."""
    start = time.perf_counter()
    torch.set_num_threads(payload.threads)  # this worker process is the task's: its thread count is set per task
    device = resolve_device(payload.device)
    bundle = _model(payload.model)
    data = _data(payload.data)
    context = ResetContext(bundle.factory, bundle.network, payload.config.seed, payload.config.trust_pickle)
    resets: dict[str, Reset] = {r.name: r.prepare(context) for r in payload.resets}  # named as the driver names them
    jobs = [Job(resets[j.reset], j.trial, j.unit,
                ResetMetrics.from_state(j.state) if j.state is not None else ResetMetrics()) for j in payload.jobs]
    rows, base = evaluate(bundle, data, jobs, payload.config, device=device)
    return TaskResult(rows, base, socket.gethostname(), os.getpid(), time.perf_counter() - start)


def _get(ref: Any) -> Any:
    import ray  # optional dependency; present in every Ray worker

    return ray.get(ref)


def _model(spec: ModelPayload) -> ModelBundle:
    if _MODEL and _MODEL[0][0] == spec.key:
        return _MODEL[0][1]
    _MODEL.clear()  # let the previous model go before loading the next
    bundle = build_source(spec.source) if spec.source is not None else _get(spec.ref)
    checksum = bundle.checksum()
    if checksum != spec.weights_sha256:
        raise LayercritError(
            f"worker on {socket.gethostname()} built {spec.spec} with other weights than the driver "
            f"(sha256 {checksum[:12]}... vs {spec.weights_sha256[:12]}...): every node must see the same "
            "checkpoint files (a shared filesystem or the same LAYERCRIT_CACHE contents), and a model changed "
            "after create_model must be measured as a module (layercrit.ModelBundle.from_module)")
    _MODEL.append((spec.key, bundle))
    return bundle


def _data(spec: DataPayload) -> EvalData:
    if _DATA and _DATA[0][0] == spec.fingerprint:
        return _DATA[0][1]
    _DATA.clear()
    if spec.origin is not None:
        if not os.path.isdir(spec.origin.path):
            raise LayercritError(f"data folder {spec.origin.path} is not visible on {socket.gethostname()}: put it on "
                                 "a filesystem every node mounts at the same path, or use the object store data mode")
        data = spec.origin.load(progress=False, cache=True)
        if data.fingerprint != spec.fingerprint:
            raise LayercritError(f"data folder {spec.origin.path} on {socket.gethostname()} holds other images than "
                                 "on the driver: every node must see the same files")
    else:
        shipped: ShippedData = _get(spec.ref)
        with warnings.catch_warnings():  # read-only shared memory: nothing writes into the images
            warnings.simplefilter("ignore", UserWarning)
            images = (torch.from_numpy(shipped.images) if shipped.images.dtype.name == "uint8"
                      else torch.tensor(shipped.images))
        data = EvalData(images, torch.tensor(shipped.labels), list(shipped.classes), spec.fingerprint, shipped.source)
    _DATA.append((spec.fingerprint, data))
    return data
