"""``measure()``: the study's measurement loop, with results committed as they complete.

Each (reset kind, trial, layer) is a *unit*: put the reset parameters into that one layer,
evaluate the images, compare with the unmodified model, restore the layer. With
``unit="block"`` the layers are residual blocks (their whole residual branch is reset, or
removed with ``reset="remove"``). Units are
evaluated batch by batch, all units on one batch before the next, so that

- the cached engine (``engine="cached"``) runs the unmodified model once per batch and
  recomputes, per unit, only the part of the graph below the reset layer (see graph.py);
- adaptive sampling (``target_ci``) can stop a unit as soon as its criticality is known
  well enough, each unit using a prefix of the (shuffled) evaluation set;
- progress is saved after every batch (running float64 sums per unit) and a unit's row is
  committed when it completes, so an interrupted run resumes with identical numbers.
"""
from __future__ import annotations

import contextlib
import logging
import platform
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import pandas as pd
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..data import EvalData, load_data
from ..errors import LayercritError
from ..models import ModelBundle, NormalizedModel
from ..resets import DEFAULT_TYPES, Layer, RemoveReset, Reset, discover_blocks, discover_layers, layer_reset, parse_reset
from ..store import RESULT_COLUMNS, ResultStore
from .graph import no_inplace_modules, try_cached_graph
from .metrics import BaselineMetrics, ResetMetrics

log = logging.getLogger("layercrit")

ENGINES = ("cached", "naive")
UNITS = ("layer", "block")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
MIN_ADAPTIVE_SAMPLES = 100  # never stop a unit on fewer images: tiny samples misjudge the variance


def resolve_device(name: str | torch.device) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LayercritError(f"unknown device {name}: use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LayercritError(f"device {name} is not available here (no CUDA GPU): use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise LayercritError(f"device {name} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise LayercritError(f"device {name} is not available here (no Apple GPU): use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise LayercritError(f"unknown device {name}: use cpu, cuda, cuda:N or mps")
    return device


def package_versions() -> dict[str, str]:
    import timm
    import torchvision

    from .. import __version__

    return {"layercrit": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__, "python": platform.python_version()}


def _as_bundle(model, factory) -> ModelBundle:
    if isinstance(model, ModelBundle):
        return model
    if not isinstance(model, nn.Module):
        raise LayercritError(f"model must be a ModelBundle or an nn.Module, got {type(model).__name__}")
    if factory is None:
        raise LayercritError("measure() needs factory= (builds a fresh instance) when given a plain nn.Module")
    wrapped = model if isinstance(model, NormalizedModel) else NormalizedModel(model, None, None)
    return ModelBundle(wrapped.eval(), factory, "python", type(wrapped.model).__name__, -1, -1,
                       type(wrapped.model).__name__)


@dataclass
class _Unit:
    reset: Reset
    trial: int
    layer: Layer
    metrics: ResetMetrics = field(default_factory=ResetMetrics)
    values: dict | None = None  # the layer's reset parameters, drawn once

    @property
    def key(self) -> tuple[str, str, int]:
        return self.layer.name, self.reset.name, self.trial


BACKENDS = ("local", "ray")


@dataclass
class MeasurePlan:
    """One model's measurement, prepared and checked on the driver; what every backend starts from."""

    bundle: ModelBundle | None  # None once a backend no longer needs it (the ray backend drops it)
    data: EvalData | None  # likewise
    model_id: str
    category: str | None
    layers: list[Layer]
    reset_specs: list[str]
    units: list[_Unit]
    identity: dict
    config: dict
    n_samples: int
    data_fingerprint: str
    weights_sha256: str
    seed: int
    trust_pickle: bool
    batch_size: int
    engine: str
    precision: str
    target_ci: float | None
    channels_last: bool
    device: torch.device
    model_options: dict | None = None  # create_model(spec, **model_options) rebuilds the model (ray workers)
    data_path: str | None = None  # the folder the data was loaded from, None for in-memory EvalData
    data_options: dict = field(default_factory=dict)  # load_data(data_path, **data_options) reloads it


def prepare_measurement(model: ModelBundle | nn.Module | str, data: EvalData | str, *,
                        layers: Sequence[str] | None = None, types: Sequence[str] = DEFAULT_TYPES,
                        reset: str | Sequence[str] = "random", trials: int = 3, samples: int | None = 10000,
                        seed: int = 0, batch_size: int = 128, device: str = "cpu", model_id: str | None = None,
                        category: str | None = None, factory: Callable[[], nn.Module] | None = None,
                        input_size: int | None = None, split: str = "test", engine: str = "cached",
                        precision: str = "fp32", target_ci: float | None = None, channels_last: bool = True,
                        data_cache: bool = True, trust_pickle: bool = False, progress: bool = True,
                        model_options: dict | None = None, check_device: bool = True,
                        unit: str = "layer") -> MeasurePlan:
    """Check the options, load model and data, find the layers, list the units (see :func:`measure`).

    ``model`` may be a spec string: it is built with ``create_model(model, **model_options)``.
    With ``check_device=False`` the device is not looked up here and the model stays on the CPU
    (a driver that only prepares work for other machines).
    """
    if isinstance(model, str):
        from ..models import create_model

        model_options = dict(model_options or {})
        model = create_model(model, **model_options)
    bundle = _as_bundle(model, factory)
    model_id = model_id or bundle.model_id
    category = category or bundle.category
    device_t = resolve_device(device) if check_device else torch.device(device)
    if trials < 1:
        raise LayercritError(f"--trials must be at least 1, got {trials}")
    if batch_size < 1:
        raise LayercritError(f"--batch-size must be at least 1, got {batch_size}")
    if engine not in ENGINES:
        raise LayercritError(f"unknown engine '{engine}': use {' or '.join(ENGINES)}")
    if unit not in UNITS:
        raise LayercritError(f"unknown unit '{unit}': use {' or '.join(UNITS)}")
    if precision not in PRECISIONS:
        raise LayercritError(f"unknown precision '{precision}': use {', '.join(PRECISIONS)}")
    if target_ci is not None and not target_ci > 0:
        raise LayercritError(f"--target-ci must be a positive number of percentage points, got {target_ci}")
    size = input_size or bundle.input_size
    data_path, data_options = None, {}
    if isinstance(data, EvalData):
        if samples is not None and samples != len(data):
            data = data.subset(samples, seed)
    else:
        if size < 1:
            raise LayercritError("input_size= is needed to load data for a plain nn.Module")
        data_path, data_options = str(data), dict(input_size=size, samples=samples, seed=seed, split=split)
        data = load_data(data, **data_options, progress=progress, cache=data_cache)
    net = bundle.model.eval().to(device_t if check_device else "cpu")
    probe_device = device_t if check_device else torch.device("cpu")
    reset_specs = [reset] if isinstance(reset, str) else list(reset)
    resets = [parse_reset(r, factory=bundle.factory, seed=seed, trust_pickle=trust_pickle) for r in reset_specs]
    if unit == "layer" and any(isinstance(r, RemoveReset) for r in resets):
        raise LayercritError("--reset remove removes residual blocks: add --unit block")
    if unit == "block":
        found = discover_blocks(bundle.network, data.images.shape[-1], patterns=list(layers or []))
    else:
        found = discover_layers(bundle.network, data.images.shape[-1], types=tuple(types), patterns=list(layers or []))
    with torch.inference_mode():
        probe = net(data.images[:1].to(probe_device).float().div(255) if data.images.dtype == torch.uint8
                    else data.images[:1].to(probe_device).float())
    if probe.shape[1] != data.num_classes:
        raise LayercritError(f"the model has {probe.shape[1]} outputs but the data has {data.num_classes} "
                             f"classes: pass --num-classes {data.num_classes} (or use matching data)")

    units = [_Unit(r, t, layer) for r in resets for t in (range(trials) if r.stochastic else [0]) for layer in found]
    identity = {"weights_sha256": bundle.checksum(), "data_fingerprint": data.fingerprint, "seed": seed,
                "arch": bundle.arch, "normalize": _normalization(bundle.model), "precision": precision,
                "target_ci": target_ci}
    config = {**identity, "model_spec": bundle.spec, "num_classes": data.num_classes, "samples": len(data),
              "data_source": data.source, "trials": trials, "resets": [r.name for r in resets],
              "unit": unit, "types": list(types) if unit == "layer" else [], "layers": list(layers or []), "batch_size": batch_size, "device": str(device_t),
              "engine": engine}
    return MeasurePlan(bundle, data, model_id, category, found, reset_specs, units, identity, config, len(data),
                       data.fingerprint, identity["weights_sha256"], seed, trust_pickle, batch_size, engine,
                       precision, target_ci, channels_last, device_t, model_options, data_path, data_options)


def open_measurement(plan: MeasurePlan, db: ResultStore | None) -> tuple[int | None, list[_Unit]]:
    """Open (or resume) the plan's run in ``db``; return its run id and the units still to do.

    Units with saved running sums on the same batch grid continue from them.
    """
    if db is None:
        return None, list(plan.units)
    run_id = db.open_run(plan.model_id, spec=plan.bundle.spec if plan.bundle else plan.config["model_spec"],
                         category=plan.category, weights_sha256=plan.weights_sha256,
                         data_fingerprint=plan.data_fingerprint, identity=plan.identity, config=plan.config,
                         versions=package_versions())
    done, partial = db.done_keys(run_id), db.partial_states(run_id)
    todo = [u for u in plan.units if u.key not in done]
    for u in todo:
        state = partial.get(u.key)
        if state is not None and state["n"] % plan.batch_size == 0:  # resumable only on the same batch grid
            u.metrics = ResetMetrics.from_state(state)
    return run_id, todo


def finish_measurement(plan: MeasurePlan, db: ResultStore | None, run_id: int | None, rows: list[dict],
                       base: dict) -> pd.DataFrame:
    """Record the baseline and the end of the run; return the plan's rows as a tidy table."""
    if db is not None:
        db.set_baseline(run_id, base, plan.n_samples)
        db.finish_run(run_id)
        table = db.results([plan.model_id])
        wanted = {u.key for u in plan.units}
        keep = [k in wanted for k in zip(table["layer"], table["reset"], table["trial"])]
        return table[keep].reset_index(drop=True)
    order = {u.key: i for i, u in enumerate(plan.units)}
    rows = sorted(rows, key=lambda r: order[(r["layer"], r["reset"], r["trial"])])
    table = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    table.insert(0, "model_id", plan.model_id)
    table["base_top1_acc"] = base["top1_acc"]
    return table


def measure(model: ModelBundle | nn.Module | str, data: EvalData | str, *, layers: Sequence[str] | None = None,
            types: Sequence[str] = DEFAULT_TYPES, reset: str | Sequence[str] = "random", trials: int = 3,
            samples: int | None = 10000, seed: int = 0, batch_size: int = 128, device: str = "cpu",
            store: ResultStore | str | None = None, model_id: str | None = None, category: str | None = None,
            factory: Callable[[], nn.Module] | None = None, input_size: int | None = None, split: str = "test",
            engine: str = "cached", precision: str = "fp32", target_ci: float | None = None,
            channels_last: bool = True, data_cache: bool = True, trust_pickle: bool = False,
            progress: bool = True, backend: str = "local", ray: dict | None = None,
            model_options: dict | None = None, unit: str = "layer") -> pd.DataFrame:
    """Measure layer criticality; return a tidy DataFrame (one row per layer x reset x trial).

    ``model`` is a :class:`ModelBundle` (from :func:`layercrit.create_model`), a model spec
    string (built with ``create_model(model, **model_options)``) or an ``nn.Module`` with
    ``factory`` (a callable building a freshly initialized instance of the same
    architecture). ``data`` is an :class:`EvalData` or a data folder. With ``store`` (a path
    or :class:`ResultStore`) progress is saved as it happens, and a rerun resumes.

    ``engine``: "cached" (recompute only what a reset changes; the default) or "naive" (a full
    forward pass per unit, as the original study). ``target_ci``: stop a unit once the 95 %
    confidence half-width of its criticality is at most this many percentage points
    (default None: every image, the study's method). ``precision``: fp32, bf16 or fp16.
    ``unit``: "layer" (the study) or "block" (residual blocks; ``reset`` may then be "remove").

    ``backend="ray"`` spreads the units over a Ray cluster in tasks of (layer group, trial);
    ``ray`` holds its options (``address``, ``gpus_per_task``, ``cpus_per_task``,
    ``layers_per_task``, ``max_retries``, ``data_mode``; see :mod:`layercrit.scale`). Workers
    rebuild the model from its spec when ``model_options`` is given (or ``model`` is a spec),
    else it is shipped once through Ray's object store. Same numbers as ``backend="local"``.
    """
    if backend not in BACKENDS:
        raise LayercritError(f"unknown backend '{backend}': use {' or '.join(BACKENDS)}")
    if ray is not None and backend != "ray":
        raise LayercritError("ray options need backend='ray' (--backend ray)")
    if backend == "ray":
        from ..scale.ray_backend import check_ray_options

        ray = check_ray_options(ray or {}, device)  # before any loading
    if isinstance(model, str) and model_options is None:
        model_options = {}
    plan = prepare_measurement(model, data, layers=layers, types=types, reset=reset, trials=trials, samples=samples,
                               seed=seed, batch_size=batch_size, device=device, model_id=model_id, category=category,
                               factory=factory, input_size=input_size, split=split, engine=engine,
                               precision=precision, target_ci=target_ci, channels_last=channels_last,
                               data_cache=data_cache, trust_pickle=trust_pickle, progress=progress,
                               model_options=model_options, check_device=backend == "local", unit=unit)
    own_store = isinstance(store, str) or hasattr(store, "__fspath__")
    db = ResultStore(store) if own_store else store
    try:
        if backend == "ray":
            from ..scale.ray_backend import run_plans

            ((run_id, rows, base),) = run_plans([plan], db, progress=progress, **(ray or {}))
        else:
            run_id, todo = open_measurement(plan, db)
            on_batch = None if db is None else (lambda saved, finished: db.save_progress(run_id, saved, finished))
            rows, base = evaluate_units(plan.bundle, plan.data, todo, batch_size=batch_size, device=plan.device,
                                        engine=engine, precision=precision, target_ci=target_ci,
                                        channels_last=channels_last, on_batch=on_batch, progress=progress,
                                        desc=plan.model_id)
        return finish_measurement(plan, db, run_id, rows, base)
    finally:
        if own_store and db is not None:
            db.close()


def _normalization(model: NormalizedModel) -> list | None:
    if not model.normalize:
        return None
    return [[round(v, 6) for v in model.mean.flatten().tolist()], [round(v, 6) for v in model.std.flatten().tolist()]]


def evaluate_units(bundle: ModelBundle, data: EvalData, units: list[_Unit], *, batch_size: int,
                   device: torch.device, engine: str = "cached", precision: str = "fp32",
                   target_ci: float | None = None, channels_last: bool = True,
                   on_batch: Callable[[list, list[dict]], None] | None = None, progress: bool = False,
                   desc: str | None = None) -> tuple[list[dict], dict]:
    """Evaluate ``units`` of ``bundle`` on ``data`` batch by batch; return the finished rows and the
    unmodified model's metrics over all of ``data``.

    Units may start from saved running sums (``unit.metrics.n`` images already seen, on this
    batch grid). After every batch ``on_batch(saved, finished)`` gets the running sums of units
    still in progress (``[(key, state)]``) and the rows finished on that batch. Both backends
    run this: the local one over all of a model's units, each Ray task over its own group.
    """
    net, network = bundle.model.eval().to(device), bundle.network
    n_total = len(data)
    conv = channels_last and any(isinstance(m, nn.Conv2d) for m in network.modules())
    if conv:
        net.to(memory_format=torch.channels_last)
    graph = None
    if engine == "cached" and units:
        graph = try_cached_graph(net, sorted({"model." + u.layer.name for u in units}))
    for u in units:  # draw every reset once, up front: the same draw for every batch
        u.values = {k: v.detach().to(device) for k, v in u.reset.values(network, u.layer, u.trial).items()}
    autocast = (torch.autocast(device.type, dtype=PRECISIONS[precision]) if PRECISIONS[precision] is not None
                else contextlib.nullcontext())
    base = BaselineMetrics()
    base_correct_by_n = {0: 0.0}  # images seen -> unmodified top-1 hits, for each unit's own recovered_acc
    rows: list[dict] = []
    active = [u for u in units if u.metrics.n < n_total]
    bar = tqdm(total=sum(n_total - u.metrics.n for u in active), desc=desc, unit="img", unit_scale=True,
               disable=not progress, dynamic_ncols=True)
    start = time.perf_counter()
    with no_inplace_modules(net), torch.inference_mode(), autocast:
        offset = 0
        for x, y in data.batches(batch_size, device, pin_memory=device.type == "cuda"):
            if conv:
                x = x.contiguous(memory_format=torch.channels_last)
            batch_units = [u for u in active if u.metrics.n == offset]
            base_logits = (graph.run_base(x) if graph is not None and batch_units else net(x)).float()
            base.update(base_logits.cpu(), y.cpu())
            offset += len(y)
            base_correct_by_n[offset] = base.sums["top1_acc"]
            finished, saved = [], []
            for u in batch_units:
                with layer_reset(network, u.layer.name, u.values):
                    logits = graph.run_reset("model." + u.layer.name) if graph is not None else net(x)
                u.metrics.update(logits.float().cpu(), base_logits.cpu(), y.cpu())
                bar.update(len(y))
                n = u.metrics.n
                if n == n_total or (target_ci is not None and n >= min(MIN_ADAPTIVE_SAMPLES, n_total)
                                    and u.metrics.criticality_ci(n_total) <= target_ci):
                    base_top1 = 100 * base_correct_by_n[n] / n
                    row = {"layer": u.layer.name, "layer_index": u.layer.index, "layer_type": u.layer.module_type,
                           "unit": u.layer.unit,
                           "reset": u.reset.name, "trial": u.trial, **u.metrics.result(base_top1, n_total),
                           "n_samples": n, "seconds": time.perf_counter() - start}
                    finished.append(row)
                    bar.update(n_total - n)
                    bar.set_postfix_str(f"{u.layer.name} {u.reset.name} t{u.trial}: {row['criticality']:.1f}%")
                else:
                    saved.append((u.key, u.metrics.state()))
            if finished:
                done_keys = {(r["layer"], r["reset"], r["trial"]) for r in finished}
                active = [u for u in active if u.key not in done_keys]
            if on_batch is not None and (finished or saved):
                on_batch(saved, finished)
            rows.extend(finished)
    bar.close()
    if graph is not None:
        log.debug(f"cached engine kept {graph.cache_bytes / 2**20:.1f} MiB of activations per batch")
    return rows, base.result()
