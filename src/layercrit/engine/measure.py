"""``measure()``: the study's measurement loop, with results committed row by row.

For each reset kind, trial and layer (in forward order): put the reset parameters into that
one layer, evaluate the same images, compare with the unmodified model, restore the layer.
"""
from __future__ import annotations

import platform
import time
from typing import Callable, Sequence

import pandas as pd
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..data import EvalData, load_data
from ..errors import LayercritError
from ..models import ModelBundle, NormalizedModel
from ..resets import DEFAULT_TYPES, Layer, discover_layers, layer_reset, parse_reset
from ..store import RESULT_COLUMNS, ResultStore
from .metrics import BaselineMetrics, ResetMetrics


def resolve_device(name: str | torch.device) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LayercritError(f"device {name} is not available here (no CUDA GPU): use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise LayercritError(f"device {name} is not available here (no Apple GPU): use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise LayercritError(f"unknown device {name}: use cpu, cuda or mps")
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


@torch.inference_mode()
def _logits(model: nn.Module, data: EvalData, batch_size: int, device: torch.device) -> torch.Tensor:
    return torch.cat([model(x).float().cpu() for x, _ in data.batches(batch_size, device)])


def measure(model: ModelBundle | nn.Module, data: EvalData | str, *, layers: Sequence[str] | None = None,
            types: Sequence[str] = DEFAULT_TYPES, reset: str | Sequence[str] = "random", trials: int = 3,
            samples: int | None = 10000, seed: int = 0, batch_size: int = 128, device: str = "cpu",
            store: ResultStore | str | None = None, model_id: str | None = None, category: str | None = None,
            factory: Callable[[], nn.Module] | None = None, input_size: int | None = None, split: str = "test",
            trust_pickle: bool = False, progress: bool = True) -> pd.DataFrame:
    """Measure layer criticality; return a tidy DataFrame (one row per layer x reset x trial).

    ``model`` is a :class:`ModelBundle` (from :func:`layercrit.create_model`) or an ``nn.Module``
    with ``factory`` (a callable building a freshly initialized instance of the same
    architecture). ``data`` is an :class:`EvalData` or a data folder. With ``store`` (a path
    or :class:`ResultStore`) every row is committed as it completes, and a rerun resumes.
    """
    bundle = _as_bundle(model, factory)
    model_id = model_id or bundle.model_id
    device_t = resolve_device(device)
    if trials < 1:
        raise LayercritError(f"--trials must be at least 1, got {trials}")
    if batch_size < 1:
        raise LayercritError(f"--batch-size must be at least 1, got {batch_size}")
    size = input_size or bundle.input_size
    if isinstance(data, EvalData):
        if samples is not None and samples != len(data):
            data = data.subset(samples, seed)
    else:
        if size < 1:
            raise LayercritError("input_size= is needed to load data for a plain nn.Module")
        data = load_data(data, input_size=size, samples=samples, seed=seed, split=split, progress=progress)
    net = bundle.model.eval().to(device_t)
    found = discover_layers(bundle.network, data.images.shape[-1], types=tuple(types), patterns=list(layers or []))
    resets = [parse_reset(r, factory=bundle.factory, seed=seed, trust_pickle=trust_pickle)
              for r in ([reset] if isinstance(reset, str) else list(reset))]

    base_logits = _logits(net, data, batch_size, device_t)
    if base_logits.shape[1] != data.num_classes:
        raise LayercritError(f"the model has {base_logits.shape[1]} outputs but the data has {data.num_classes} "
                             f"classes: pass --num-classes {data.num_classes} (or use matching data)")
    base = BaselineMetrics()
    base.update(base_logits, data.labels)
    base_metrics = base.result()

    units = [(r, t, layer) for r in resets for t in (range(trials) if r.stochastic else [0]) for layer in found]
    identity = {"weights_sha256": bundle.checksum(), "data_fingerprint": data.fingerprint, "seed": seed,
                "arch": bundle.arch, "normalize": _normalization(bundle.model)}
    config = {**identity, "model_spec": bundle.spec, "num_classes": data.num_classes, "samples": len(data),
              "data_source": data.source, "trials": trials, "resets": [r.name for r in resets],
              "types": list(types), "layers": list(layers or []), "batch_size": batch_size, "device": str(device_t)}
    own_store = isinstance(store, (str, bytes)) or hasattr(store, "__fspath__")
    db = ResultStore(store) if own_store else store
    try:
        done: set = set()
        run_id = None
        if db is not None:
            run_id = db.open_run(model_id, spec=bundle.spec, category=category, weights_sha256=identity["weights_sha256"],
                                 data_fingerprint=data.fingerprint, identity=identity, config=config,
                                 versions=package_versions())
            db.set_baseline(run_id, base_metrics, len(data))
            done = db.done_keys(run_id)
        rows = []
        todo = [u for u in units if (u[2].name, u[0].name, u[1]) not in done]
        bar = tqdm(todo, desc=f"{model_id}", unit="layer", disable=not progress, dynamic_ncols=True)
        for r, trial, layer in bar:
            row = _measure_one(net, bundle.network, data, base_logits, base_metrics["top1_acc"], r, trial, layer,
                               batch_size, device_t)
            bar.set_postfix_str(f"{layer.name} {r.name} t{trial}: {row['criticality']:.1f}%")
            if db is not None:
                db.add_result(run_id, row)
            rows.append(row)
        if db is not None:
            db.finish_run(run_id)
            wanted = {(layer.name, r.name, t) for r, t, layer in units}
            table = db.results([model_id])
            keep = [(a, b, c) in wanted for a, b, c in zip(table["layer"], table["reset"], table["trial"])]
            return table[keep].reset_index(drop=True)
    finally:
        if own_store and db is not None:
            db.close()
    table = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    table.insert(0, "model_id", model_id)
    table["base_top1_acc"] = base_metrics["top1_acc"]
    return table


def _normalization(model: NormalizedModel) -> list | None:
    if not model.normalize:
        return None
    return [[round(v, 6) for v in model.mean.flatten().tolist()], [round(v, 6) for v in model.std.flatten().tolist()]]


def _measure_one(net: nn.Module, network: nn.Module, data: EvalData, base_logits: torch.Tensor, base_top1: float,
                 reset, trial: int, layer: Layer, batch_size: int, device: torch.device) -> dict:
    start = time.perf_counter()
    metrics = ResetMetrics(base_top1)
    with layer_reset(network, layer.name, reset.values(network, layer.name, trial)), torch.inference_mode():
        offset = 0
        for x, y in data.batches(batch_size, device):
            logits = net(x).float().cpu()
            metrics.update(logits, base_logits[offset:offset + len(y)], y.cpu())
            offset += len(y)
    return {"layer": layer.name, "layer_index": layer.index, "layer_type": layer.module_type, "reset": reset.name,
            "trial": trial, **metrics.result(), "n_samples": len(data), "seconds": time.perf_counter() - start}
