"""``--batch-size auto``: the fastest of a few batch sizes whose memory fits a budget.

Memory of one batch = a fixed part (e.g. weight copies under autocast) + a part per image (the cached
engine's activation cache, the working set of one pass). Both are *counted*, not guessed: the engine's
own per-batch work (one unmodified pass keeping the cache, then the recomputation below the layer with the
largest affected set) runs on 1 and 2 images (CUDA: 2 and 4) while every tensor it allocates is tallied
(CUDA: the allocator's peak). The candidates that fit the budget (``--max-memory``, by default half the
available RAM or 80 % of the free GPU memory) are then timed on that same work in increasing size, each once
to warm up and twice timed; the search stops when a size is not at least 3 % faster than the best so far or
the tuning would take longer than ``max_seconds``. The batch size changes no result beyond float rounding
(metrics are float64 sums over images; only the grouping of images into batches changes), except with
``--target-ci``, whose units stop at batch boundaries.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import time
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn

from .. import validate
from ..errors import ConfigError, Message
from ..models.state import out_of_place
from .graph import CachedGraph

log = logging.getLogger("layercrit")

CPU_CANDIDATES = (8, 16, 32, 64, 128, 256)
GPU_CANDIDATES = (32, 64, 128, 256, 512, 1024)
CPU_SHARE = 0.5  # default budget: this share of the available RAM ...
GPU_SHARE = 0.8  # ... or of the free GPU memory
SAFETY = 1.25  # estimates are multiplied by this before they are compared with the budget
MIN_GAIN = 1.03  # a larger batch must be this much faster to go on searching
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def parse_memory(text: str | int | None, device: str | torch.device = "cpu", name: str = "{max_memory}") -> int | None:
    """A memory budget in bytes from ``12G``, ``512MiB``, ``2.5GB``, ``1073741824`` or ``40%`` (of what is free
    on ``device`` now)."""
    value = validate.memory_size(text, name)
    if isinstance(value, str):
        return int(float(value[:-1]) / 100 * free_memory(device))
    return value


def free_memory(device: str | torch.device = "cpu") -> int:
    """Bytes free for new allocations: available RAM (CPU), free memory of the GPU (CUDA)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "mps":
        try:
            return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
        except Exception:
            return 4 * 2**30
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * 0.5)
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def default_budget(device: str | torch.device = "cpu") -> tuple[int, str]:
    """The default memory budget and how it was set."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(GPU_SHARE * free_memory(device)), f"{GPU_SHARE:.0%} of free GPU memory"
    return int(CPU_SHARE * free_memory(device)), f"{CPU_SHARE:.0%} of available RAM"


def fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


class _LiveBytes(torch.utils._python_dispatch.TorchDispatchMode):
    """Tallies the bytes of every tensor storage allocated under it and still alive; keeps the peak."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._storages: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        self._storages.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                try:
                    storage = t.untyped_storage()
                    key, nbytes = storage.data_ptr(), storage.nbytes()
                except Exception:
                    continue
                if nbytes == 0 or key in self._storages:
                    continue  # a view or an in-place result: no new memory
                self._storages.add(key)
                self.live += nbytes
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._free, key, nbytes)
        return out


def peak_bytes(fn: Callable[[], object], device: str | torch.device = "cpu") -> int:
    """Peak bytes of the tensors ``fn`` allocates (its result dropped at the end)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        del result
        return int(peak)
    with _LiveBytes() as tally:
        result = fn()
        del result
    return int(tally.peak)


@dataclass
class BatchChoice:
    """What ``--batch-size auto`` chose and why; recorded in the run's config (``batch_size_auto``)."""

    batch_size: int
    budget_bytes: int
    budget: str  # how the budget was set
    fixed_bytes: int
    bytes_per_image: int
    images_per_s: dict[int, float] = field(default_factory=dict)  # the candidates timed
    too_big: list[int] = field(default_factory=list)  # candidates over the budget
    seconds: float = 0.0  # tuning time

    def record(self) -> dict:
        d = asdict(self)
        d["images_per_s"] = {str(k): round(v, 2) for k, v in self.images_per_s.items()}
        d["seconds"] = round(self.seconds, 2)
        return d

    def summary(self) -> str:
        rates = ", ".join(f"{b}: {r:.1f}" for b, r in self.images_per_s.items())
        return (f"{{batch_size}} auto: {self.batch_size} (images/s by batch size: {rates}; about "
                f"{fmt_bytes(self.fixed_bytes + self.batch_size * self.bytes_per_image)} of the budget "
                f"{fmt_bytes(self.budget_bytes)}, {self.budget})")


def estimate_bytes(run: Callable[[int], object], n_images: int, device: str | torch.device = "cpu") -> tuple[int, int]:
    """(fixed, per image) bytes of ``run(b)``, from its peak on two small batches."""
    wanted = (2, 4) if torch.device(device).type == "cuda" else (1, 2)
    small = sorted({max(1, min(b, n_images)) for b in wanted})
    peaks = [peak_bytes(functools.partial(run, b), device) for b in small]
    if len(small) == 1:
        return 0, max(1, peaks[0] // small[0])
    per_image = max(1, (peaks[1] - peaks[0]) // (small[1] - small[0]))
    fixed = max(0, peaks[0] - small[0] * per_image)
    return int(fixed), int(per_image)


def candidate_sizes(n_images: int, device: str | torch.device = "cpu",
                    candidates: Sequence[int] | None = None) -> list[int]:
    cands = candidates or (GPU_CANDIDATES if torch.device(device).type == "cuda" else CPU_CANDIDATES)
    return sorted({max(1, min(int(c), n_images)) for c in cands})


def choose_batch_size(run: Callable[[int], object], *, n_images: int, device: str | torch.device = "cpu",
                      budget_bytes: int | None = None, budget: str | None = None,
                      candidates: Sequence[int] | None = None, repeats: int = 2, max_seconds: float = 60.0,
                      clock: Callable[[], float] = time.perf_counter,
                      memory: tuple[int, int] | None = None) -> BatchChoice:
    """The fastest candidate batch size whose estimated memory fits the budget.

    ``run(b)`` does one batch of ``b`` images of the real work. ``memory`` = (fixed, per image)
    bytes skips the counting. Raises LayercritError when not even one image fits.
    """
    start = clock()
    if budget_bytes is None:
        budget_bytes, budget = default_budget(device)
    budget = budget or f"max_memory {fmt_bytes(budget_bytes)}"
    fixed, per_image = memory if memory is not None else estimate_bytes(run, n_images, device)

    def fits(b: int) -> bool:
        return SAFETY * (fixed + b * per_image) <= budget_bytes

    sizes = candidate_sizes(n_images, device, candidates)
    too_big = [b for b in sizes if not fits(b)]
    sizes = [b for b in sizes if fits(b)]
    if not sizes:  # below the smallest candidate: the largest power of two that fits
        b = 2 ** int(math.log2(max(1, min(candidate_sizes(n_images, device, candidates)))))
        while b > 1 and not fits(b):
            b //= 2
        if not fits(b):
            raise ConfigError(
                f"{{max_memory}}: the budget {fmt_bytes(budget_bytes)} ({budget}) holds no batch: one image needs "
                f"about {fmt_bytes(SAFETY * (fixed + per_image))}; raise {{max_memory}}, free memory, "
                "or use {engine} naive (no activation cache)")
        sizes = [b]
    rates: dict[int, float] = {}
    best: int | None = None
    for b in sizes:
        if best is not None:
            predicted = (1 + repeats) * b / rates[best]
            if clock() - start + predicted > max_seconds:
                break
        run(b)  # warm-up: first calls with a new shape pick kernels
        times = []
        for _ in range(repeats):
            t0 = clock()
            run(b)
            times.append(clock() - t0)
        rates[b] = b / max(min(times), 1e-9)
        if best is None or rates[b] > rates[best] * MIN_GAIN:
            best = b
        else:
            break  # no longer (much) faster: larger batches only cost memory
    assert best is not None  # sizes is never empty
    return BatchChoice(best, int(budget_bytes), budget, fixed, per_image, rates, too_big, clock() - start)


def auto_batch_size(net: nn.Module, images: torch.Tensor, layer_paths: Sequence[str], *,
                    device: str | torch.device = "cpu", engine: str = "cached", precision: str = "fp32",
                    channels_last: bool = True, max_memory: int | str | None = None,
                    candidates: Sequence[int] | None = None, max_seconds: float = 60.0) -> BatchChoice:
    """``--batch-size auto`` for the engine: ``net`` (the normalized model, on ``device``), the evaluation
    ``images`` (uint8 or float, as stored), ``layer_paths`` the reset module paths inside ``net``."""
    device = torch.device(device)
    parsed = parse_memory(max_memory, device)
    if parsed is None:
        budget_bytes, budget = default_budget(device)
    else:
        budget_bytes = parsed
        budget = f"max_memory {max_memory}" if isinstance(max_memory, str) else f"max_memory {fmt_bytes(parsed)}"
    net = net.eval()
    conv = channels_last and any(isinstance(m, nn.Conv2d) for m in net.modules())
    if conv:
        net.to(memory_format=torch.channels_last)
    graph: CachedGraph | None = None
    path = ""
    if engine == "cached" and layer_paths:
        try:
            traced = CachedGraph(net, list(layer_paths))
            path = max(layer_paths, key=lambda p: len(traced.affected[p]))  # the largest recomputation
            graph = traced
        except Exception:  # the engine will fall back to naive (and say so)
            graph = None

    def run(b: int):
        x = images[:b].to(device)
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        if conv:
            x = x.contiguous(memory_format=torch.channels_last)
        if graph is not None:
            base = graph.run_base(x)
            out = graph.run_reset(path)
            graph.cache = {}
        else:
            base, out = net(x), net(x)
        result = (base.float().cpu(), out.float().cpu())
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return result

    autocast = (torch.autocast(device.type, dtype=_AUTOCAST[precision]) if precision in _AUTOCAST
                else contextlib.nullcontext())
    with out_of_place(net), torch.inference_mode(), autocast:
        choice = choose_batch_size(run, n_images=len(images), device=device, budget_bytes=budget_bytes,
                                   budget=budget, candidates=candidates, max_seconds=max_seconds)
    log.info(Message(choice.summary()))
    return choice


def choose_for_plan(net: nn.Module, images: torch.Tensor, unit_names: Sequence[str], *, engine: str, precision: str,
                    channels_last: bool, max_memory: int | str | None, device: torch.device,
                    probe_device: torch.device) -> BatchChoice:
    """``batch_size="auto"`` for a measurement plan (engine/plan.py): chosen where the jobs will run."""
    if torch.device(probe_device) != torch.device(device):
        raise ConfigError(f"{{batch_size}} auto is chosen on the machine that measures, but this plan is prepared "
                          f"on {probe_device} for {device} (e.g. the Ray executor): give {{batch_size}} a number",
                          ("batch_size",))
    return auto_batch_size(net, images, ["model." + name for name in unit_names], device=device, engine=engine,
                           precision=precision, channels_last=channels_last, max_memory=max_memory)


def resumed_batch_size(record: dict, runs, run_id: int, resumable: bool) -> int | None:
    """A resumed run with ``batch_size="auto"`` keeps the batch size of the run it continues, where that run
    saved jobs mid-way (``resumable``: their running sums are on its batch grid) and the size fits today's
    budget; None keeps the new choice. ``runs``: the store's runs table; ``record``: the plan's config record."""
    auto = record.get("batch_size_auto")
    if not auto or not resumable:
        return None
    row = runs[runs["run_id"] == run_id]
    try:
        stored = json.loads(row.iloc[0]["config"]).get("batch_size")
    except (IndexError, KeyError, TypeError, ValueError):
        return None
    if isinstance(stored, bool) or not isinstance(stored, int) or stored < 1 or stored == record.get("batch_size"):
        return None
    if SAFETY * (auto["fixed_bytes"] + stored * auto["bytes_per_image"]) > auto["budget_bytes"]:
        return None  # the earlier size does not fit here: the new choice, saved jobs restart
    log.info(Message(f"{{batch_size}} auto: resuming with batch size {stored}, the interrupted run's (its saved "
                     f"progress is on that grid) instead of {record.get('batch_size')}"))
    return stored
