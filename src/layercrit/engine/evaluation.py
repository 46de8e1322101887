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
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..data import EvalData
from ..models import ModelBundle
from ..errors import ConfigError, Message
from ..models.state import out_of_place, parameters_set
from .config import MeasureConfig
from .graph import try_cached_graph
from .metrics import BaselineMetrics
from .outputs import Output
from .plan import Job, JobKey, Row, nonfinite_base_error

log = logging.getLogger("layercrit")

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
VERIFY_IMAGES = 4  # images of the first batch on which the cached engine is checked against full passes
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
    left on ``device`` in eval mode; :func:`~layercrit.models.state.kept_as_found` restores the caller's.
    """
    if not isinstance(config.batch_size, int):
        raise ValueError("batch_size 'auto' is resolved by plan_measurement: evaluate a plan's config")
    run = _Evaluation(bundle, data, jobs, config, device)
    bar = progress_bar(sum(len(data) - j.metrics.n for j in run.active), len(data), desc, progress)
    rows: list[Row] = []
    with out_of_place(run.net), torch.inference_mode(), run.autocast():
        for x, y in data.batches(config.batch_size, device, pin_memory=device.type == "cuda"):
            finished, saved = run.batch(x, y, bar)
            if on_batch is not None and (finished or saved):
                on_batch(saved, finished)
            rows.extend(finished)
    bar.close()
    if run.graph is not None:
        log.debug(f"cached engine kept {run.graph.cache_bytes / 2**20:.1f} MiB of activations per batch")
    return rows, run.base.result()


class _Evaluation:
    """One evaluation's state between batches: the model (and its cached graph), the unmodified model's
    running metrics and the jobs still active."""

    def __init__(self, bundle: ModelBundle, data: EvalData, jobs: list[Job], config: MeasureConfig,
                 device: torch.device):
        self.config, self.device, self.n_total = config, device, len(data)
        self.net, self.network = bundle.model.eval().to(device), bundle.network
        self.conv = config.channels_last and any(isinstance(m, nn.Conv2d) for m in self.network.modules())
        if self.conv:
            self.net.to(memory_format=torch.channels_last)
        self.graph = None
        self.output = Output(config.output, self.net)  # what is compared: class scores, a module's output, ...
        if config.engine == "cached" and jobs:
            if self.output.traceable:
                self.graph = try_cached_graph(self.net, sorted({"model." + j.unit.name for j in jobs}),
                                              self.output.graph_path)
            else:
                log.warning(Message(f"{{output}} {self.output.label}: the cached engine cannot see inside a callable; "
                                    "using {engine} naive"))
        for j in jobs:  # draw every reset once, up front: the same draw for every batch
            j.values = {k: v.detach().to(device) for k, v in j.reset.values(self.network, j.unit, j.trial).items()}
            _check_shapes(self.network, j)
        # temperature scaling: every softmax metric sees logits / T (plan_measurement has fitted a "calibrate")
        if isinstance(config.temperature, str):
            raise ValueError("evaluate: temperature 'calibrate' must be fitted first (plan_measurement does)")
        self.temperature = config.temperature or 1.0
        self.base = BaselineMetrics()
        self.base_correct_by_n = {0: 0.0}  # images seen -> unmodified top-1 hits, for each job's recovered_acc
        self.active = [j for j in jobs if j.metrics.n < self.n_total]
        self.verified = False  # the cached engine checked against full passes (first batch it runs on)
        self.offset = 0
        self.start = time.perf_counter()

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = AUTOCAST[self.config.precision]
        return torch.autocast(self.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def batch(self, x: torch.Tensor, y: torch.Tensor, bar: Any) -> tuple[list[Row], list[tuple[JobKey, dict]]]:
        """Run one batch: the unmodified model, then every job due on it; (rows finished, sums still running)."""
        if self.conv:
            x = x.contiguous(memory_format=torch.channels_last)
        batch_jobs = [j for j in self.active if j.metrics.n == self.offset]
        if self.graph is not None and batch_jobs and not self.verified:
            self.verified = True
            if not self._cached_matches_full(x, batch_jobs):
                self.graph = None
        graph = self.graph if batch_jobs else None
        base_logits = (graph.run_base(x) if graph is not None else self.output(x)).float()
        if not bool(torch.isfinite(base_logits).all()):
            raise nonfinite_base_error()
        base_logits = base_logits / self.temperature if self.temperature != 1.0 else base_logits
        if self.output.classes:  # features have no top-1: the unmodified model's class metrics stay NaN
            self.base.update(base_logits.cpu(), y.cpu())
        self.offset += len(y)
        self.base_correct_by_n[self.offset] = self.base.sums["top1_acc"]
        finished: list[Row] = []
        saved: list[tuple[JobKey, dict]] = []
        for j in batch_jobs:
            assert j.values is not None
            with parameters_set(self.network, j.unit.name, j.values):
                logits = graph.run_reset("model." + j.unit.name) if graph is not None else self.output(x)
            j.metrics.update(logits.float().cpu() / self.temperature, base_logits.cpu(), y.cpu(), self.output.compare)
            bar.update(len(y))  # counted in images, shown in layer resets (one job over all images)
            if self._done(j):
                finished.append(self._row(j))
                bar.update(self.n_total - j.metrics.n)  # stopped early (target_ci): the rest is not needed
                bar.set_postfix_str(f"{j.unit.name} {j.reset.name} t{j.trial}: {finished[-1]['criticality']:.1f}%")
            else:
                saved.append((j.key, j.metrics.state()))
        if finished:
            done_keys = {(r["layer"], r["reset"], r["trial"]) for r in finished}
            self.active = [j for j in self.active if j.key not in done_keys]
        return finished, saved

    def _cached_matches_full(self, x: torch.Tensor, jobs: list[Job]) -> bool:
        """The cached engine against full forward passes on a few images of the first batch: the unmodified model
        and every job due on it. Code the trace cannot follow (an in-place operation on a value used later,
        parameters shared between modules) would give other numbers without an error; then the naive engine
        measures, with one warning. Costs a cached and a full pass on ``VERIFY_IMAGES`` images per unit (about
        4 s of CPU for cifar_resnet50's 54 layers: ``python benchmarks/cached_check.py``)."""
        assert self.graph is not None
        xs = x[:VERIFY_IMAGES]
        graph, where = self.graph, "the unmodified model"
        tol = 1e-4 if self.config.precision == "fp32" else 3e-2  # the same arithmetic; bf16/fp16 round coarsely
        try:  # inside evaluate's autocast, like the batches
            same = _close(graph.run_base(xs), self.output(xs), tol)
            one_per_unit = {j.unit.name: j for j in jobs}.values()  # what the trace gets wrong depends on the unit
            for j in one_per_unit:
                if not same:
                    break
                where = f"a reset of {j.unit.name}"
                assert j.values is not None
                with parameters_set(self.network, j.unit.name, j.values):
                    same = _close(graph.run_reset("model." + j.unit.name), self.output(xs), tol)
        except Exception as e:  # noqa: BLE001  (any failure of the cached path: the naive one measures)
            same, where = False, f"{where} ({type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''})"
        if not same:
            log.warning(Message(f"the cached engine does not reproduce a full forward pass for {where} (code the "
                                "trace cannot follow: an in-place operation on a value used later, or parameters "
                                "shared between modules); using {engine} naive"))
        return same

    def _done(self, j: Job) -> bool:
        """All images seen, or (adaptive sampling) the criticality known to within target_ci."""
        n, target = j.metrics.n, self.config.target_ci
        return n == self.n_total or (target is not None and n >= min(MIN_ADAPTIVE_SAMPLES, self.n_total)
                                     and j.metrics.criticality_ci(self.n_total) <= target)

    def _row(self, j: Job) -> Row:
        n = j.metrics.n
        base_top1 = 100 * self.base_correct_by_n[n] / n
        return {"layer": j.unit.name, "layer_index": j.unit.index, "layer_type": j.unit.module_type,
                "unit": j.unit.level, "reset": j.reset.name, "trial": j.trial,
                **j.metrics.result(base_top1, self.n_total, self.output.classes), "n_samples": n,
                "elapsed_seconds": time.perf_counter() - self.start}


def _check_shapes(network: nn.Module, j: Job) -> None:
    """A reset's values must fit its parameters as they are: copying would broadcast a (4, 8) weight from a
    factory's (1, 8) one without an error (a factory building another class count, say)."""
    module = network.get_submodule(j.unit.name)
    for k, v in (j.values or {}).items():
        have = tuple(module.get_parameter(k).shape)
        if tuple(v.shape) != have:  # from a fresh instance (random, interpolate toward it), else a checkpoint
            source = "{factory} (or the architecture it was built from)" if j.reset.needs_factory else \
                "the reset's weights"
            raise ConfigError(f"reset {j.reset.name} of {j.unit.name}.{k} gives shape {tuple(v.shape)}, the model's "
                              f"is {have}: {source} builds another network than the one measured (another class "
                              "count or width?)", ("factory",) if j.reset.needs_factory else ("reset",))


def _close(cached: torch.Tensor, full: torch.Tensor, tol: float) -> bool:
    """Equal up to float rounding, relative to the outputs' scale."""
    a, b = cached.detach().float(), full.detach().float()
    if a.shape != b.shape:
        return False
    scale = float(b.abs().max()) if b.numel() else 0.0
    return bool(torch.allclose(a, b, rtol=tol, atol=tol * max(scale, 1e-6)))


def progress_bar(image_evals: int, n_images: int, desc: str | None, progress: bool) -> Any:
    """A bar that counts layer-reset evaluations (one unit x reset x trial over all ``n_images`` images,
    fractions while the batches run through), with their rate and the time left. It is updated in
    images, ``image_evals`` of them in all."""
    label = f"{desc}: " if desc else ""
    return tqdm(total=image_evals, desc=label, disable=not progress, dynamic_ncols=True, unit="reset",
                unit_scale=1 / max(n_images, 1),
                bar_format="{desc}{n:.1f}/{total:.0f} layer resets x " + str(n_images) + " images |{bar}| "
                           "[{elapsed}<{remaining}, {rate_fmt}{postfix}]")
