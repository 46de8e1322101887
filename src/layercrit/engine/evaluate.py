"""Evaluating jobs over batches: pure computation, no storage (see recorder.py for that).

Jobs are evaluated batch by batch, all jobs on one batch before the next, so that

- the cached engine (``engine="cached"``) runs the unmodified model once per batch and
  recomputes, per job, only the part of the graph below the reset unit (see graph.py);
- adaptive sampling (``target_ci``) can stop a job as soon as its criticality is known
  well enough, each job using a prefix of the (shuffled) evaluation set;
- the running float64 sums of every job can be saved after every batch (``on_batch``), so an
  interrupted run resumes with identical numbers.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..data import EvalData
from ..models import ModelBundle
from ..resets import layer_reset
from .config import MeasureConfig
from .graph import no_inplace_modules, try_cached_graph
from .metrics import BaselineMetrics
from .plan import Job, JobKey, Row, nonfinite_base_error

log = logging.getLogger("layercrit")

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
MIN_ADAPTIVE_SAMPLES = 100  # never stop a job on fewer images: tiny samples misjudge the variance

# on_batch(saved, finished): running sums of the jobs still in progress, and the rows finished on a batch
OnBatch = Callable[[list[tuple[JobKey, dict]], list[Row]], None]


def evaluate(bundle: ModelBundle, data: EvalData, jobs: list[Job], config: MeasureConfig, *, device: torch.device,
             on_batch: OnBatch | None = None, progress: bool = False,
             desc: str | None = None) -> tuple[list[Row], dict[str, float]]:
    """Evaluate ``jobs`` of ``bundle`` on ``data`` batch by batch; return the finished rows and the
    unmodified model's metrics over all of ``data``.

    Jobs may start from saved running sums (``job.metrics.n`` images already seen, on this batch
    grid). After every batch ``on_batch(saved, finished)`` gets the running sums of jobs still in
    progress (``[(key, state)]``) and the rows finished on that batch. Every executor runs this:
    the local one over all of a model's jobs, each Ray task over its own group. The model is
    left on ``device`` in eval mode; :func:`kept_as_found` restores the caller's.
    """
    if not isinstance(config.batch_size, int):
        raise ValueError("batch_size 'auto' is resolved by plan_measurement: evaluate a plan's config")
    batch_size = config.batch_size
    net, network = bundle.model.eval().to(device), bundle.network
    n_total = len(data)
    conv = config.channels_last and any(isinstance(m, nn.Conv2d) for m in network.modules())
    if conv:
        net.to(memory_format=torch.channels_last)
    graph = None
    if config.engine == "cached" and jobs:
        graph = try_cached_graph(net, sorted({"model." + j.unit.name for j in jobs}))
    for j in jobs:  # draw every reset once, up front: the same draw for every batch
        j.values = {k: v.detach().to(device) for k, v in j.reset.values(network, j.unit, j.trial).items()}
    dtype = AUTOCAST[config.precision]
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    base = BaselineMetrics()
    base_correct_by_n = {0: 0.0}  # images seen -> unmodified top-1 hits, for each job's own recovered_acc
    rows: list[Row] = []
    active = [j for j in jobs if j.metrics.n < n_total]
    bar = progress_bar(sum(n_total - j.metrics.n for j in active), n_total, desc, progress)
    start = time.perf_counter()
    with no_inplace_modules(net), torch.inference_mode(), autocast:
        offset = 0
        for x, y in data.batches(batch_size, device, pin_memory=device.type == "cuda"):
            if conv:
                x = x.contiguous(memory_format=torch.channels_last)
            batch_jobs = [j for j in active if j.metrics.n == offset]
            base_logits = (graph.run_base(x) if graph is not None and batch_jobs else net(x)).float()
            if not bool(torch.isfinite(base_logits).all()):
                raise nonfinite_base_error()
            base.update(base_logits.cpu(), y.cpu())
            offset += len(y)
            base_correct_by_n[offset] = base.sums["top1_acc"]
            finished: list[Row] = []
            saved: list[tuple[JobKey, dict]] = []
            for j in batch_jobs:
                assert j.values is not None
                with layer_reset(network, j.unit.name, j.values):
                    logits = graph.run_reset("model." + j.unit.name) if graph is not None else net(x)
                j.metrics.update(logits.float().cpu(), base_logits.cpu(), y.cpu())
                bar.update(len(y))  # counted in images, shown in layer resets (one job over all images)
                n = j.metrics.n
                if n == n_total or (config.target_ci is not None and n >= min(MIN_ADAPTIVE_SAMPLES, n_total)
                                    and j.metrics.criticality_ci(n_total) <= config.target_ci):
                    base_top1 = 100 * base_correct_by_n[n] / n
                    row = {"layer": j.unit.name, "layer_index": j.unit.index, "layer_type": j.unit.module_type,
                           "unit": j.unit.level, "reset": j.reset.name, "trial": j.trial,
                           **j.metrics.result(base_top1, n_total), "n_samples": n,
                           "elapsed_seconds": time.perf_counter() - start}
                    finished.append(row)
                    bar.update(n_total - n)  # stopped early (target_ci): the rest is not needed
                    bar.set_postfix_str(f"{j.unit.name} {j.reset.name} t{j.trial}: {row['criticality']:.1f}%")
                else:
                    saved.append((j.key, j.metrics.state()))
            if finished:
                done_keys = {(r["layer"], r["reset"], r["trial"]) for r in finished}
                active = [j for j in active if j.key not in done_keys]
            if on_batch is not None and (finished or saved):
                on_batch(saved, finished)
            rows.extend(finished)
    bar.close()
    if graph is not None:
        log.debug(f"cached engine kept {graph.cache_bytes / 2**20:.1f} MiB of activations per batch")
    return rows, base.result()


def progress_bar(image_evals: int, n_images: int, desc: str | None, progress: bool) -> Any:
    """A bar that counts layer-reset evaluations (one unit x reset x trial over all ``n_images`` images,
    fractions while the batches run through), with their rate and the time left. It is updated in
    images, ``image_evals`` of them in all."""
    label = f"{desc}: " if desc else ""
    return tqdm(total=image_evals, desc=label, disable=not progress, dynamic_ncols=True, unit="reset",
                unit_scale=1 / max(n_images, 1),
                bar_format="{desc}{n:.1f}/{total:.0f} layer resets x " + str(n_images) + " images |{bar}| "
                           "[{elapsed}<{remaining}, {rate_fmt}{postfix}]")


@contextlib.contextmanager
def kept_as_found(module: nn.Module) -> Iterator[None]:
    """Restore ``module`` as it was on leaving: every submodule's train/eval mode, and every parameter's
    and buffer's device and memory layout (strides). Its values are restored by the resets themselves."""
    owners = list(module.modules())
    modes = [m.training for m in owners]
    layouts = [{(kind, name): (t.device, t.stride()) for kind, tensors in (("p", m._parameters), ("b", m._buffers))
                for name, t in tensors.items() if t is not None} for m in owners]
    try:
        yield
    finally:
        for m, training, layout in zip(owners, modes, layouts):
            m.training = training
            for kind, tensors in (("p", m._parameters), ("b", m._buffers)):
                for name, t in tensors.items():
                    if t is None or (kind, name) not in layout:
                        continue
                    dev, stride = layout[kind, name]
                    if t.device == dev and t.stride() == stride:
                        continue
                    with torch.no_grad():
                        restored = torch.empty_strided(t.shape, stride, dtype=t.dtype, device=dev).copy_(t)
                    if isinstance(t, nn.Parameter):
                        t.data = restored  # the same Parameter object: optimizers and hooks keep working
                    else:
                        setattr(m, name, restored)  # a buffer stays a buffer (Module.__setattr__)
