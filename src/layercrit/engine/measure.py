"""``measure()``: the study's measurement of one model; ``measure_models()``: several into one database.

Both are thin: check the settings (:class:`MeasureConfig`), plan (:mod:`.plan`), and hand the plans
to an executor (:class:`LocalExecutor` by default; ``layercrit.scale.ray.RayExecutor`` spreads them
over a Ray cluster), which records through a :class:`Recorder`: rows are committed as they complete,
and a rerun resumes.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Union

import pandas as pd
import torch
import torch.nn as nn

from ..data import EvalData
from ..errors import ConfigError, LayercritError
from ..models import ModelBundle, ModelSource, build_source, create_model
from ..models.registry import AUTO
from ..models.state import kept_as_found
from ..store import ResultStore
from .config import MeasureConfig
from .executor import Executor, LocalExecutor
from .plan import MeasurePlan, plan_measurement
from .recorder import Recorder

log = logging.getLogger("layercrit")

Model = Union[ModelBundle, nn.Module, ModelSource, str]
Data = Union[EvalData, str, "os.PathLike[str]"]
Store = Union[ResultStore, str, "os.PathLike[str]", None]


def measure(model: Model, data: Data, config: MeasureConfig | None = None, *, store: Store = None,
            executor: Executor | None = None, device: str | torch.device = "cpu", progress: bool = True,
            factory: Callable[[], nn.Module] | None = None, normalize: Any = AUTO, **overrides: Any) -> pd.DataFrame:
    """Measure layer criticality; return a tidy DataFrame (one row per unit x reset x trial, in the
    order measured; the same columns with or without ``store``, see :data:`TIDY_COLUMNS`).

    ``model``: a :class:`ModelBundle` (from :func:`layercrit.create_model`; its model id and category
    are the run's), a model spec string or :class:`ModelSource` (built with ``create_model``), or any
    ``nn.Module``. For a module: ``normalize=(mean, std)`` (the input normalization its training used)
    or ``normalize=None`` (it takes [0, 1] images as they are) is required, and ``factory`` (builds a
    freshly initialized instance of its architecture) is what ``random`` resets draw from; without one,
    measure ``reset="zero"`` or ``reset="init:<checkpoint>"``. Its name and category in the results are
    the bundle's: ``create_model(spec, name=..., category=...)``, or for a module
    ``ModelBundle.from_module(module, factory, normalize=..., model_id=..., category=...)`` (default: the
    class name, no category). ``data``: an :class:`EvalData` (all of its images unless ``samples=`` is
    given) or a data folder (``samples`` images drawn with ``seed``, default 10,000).

    ``config``: a :class:`MeasureConfig`; ``overrides`` replace any of its fields (``trials=1``,
    ``reset=["random", "zero"]``, ``unit="block"``, ...). ``store``: a results database (path or
    :class:`ResultStore`) where progress is saved as it happens, so a rerun resumes. ``executor``:
    where the jobs run (default :class:`LocalExecutor`: here, on ``device``). The model is left as it
    was found: same mode, device and memory format, same weights. Errors name these parameters.
    """
    config = _config(config, overrides, data)
    executor = executor or LocalExecutor()
    probe = executor.check(device)  # before any loading
    caller = model.model if isinstance(model, ModelBundle) else model  # left as found, even by as_bundle's eval()
    with kept_as_found(caller if isinstance(caller, nn.Module) else nn.Module()):
        bundle = as_bundle(model, factory, normalize=normalize)
        plan = plan_measurement(bundle, data, config, device=torch.device(device), probe_device=probe,
                                progress=progress)
        with Recorder.open(store) as recorder:
            (table,) = executor.run([plan], recorder, progress=progress)
    return table


def measure_models(models: Iterable[Model | tuple[Model, MeasureConfig]], data: Data,
                   config: MeasureConfig | None = None, *, store: Store = None, executor: Executor | None = None,
                   device: str | torch.device = "cpu", progress: bool = True, **overrides: Any) -> pd.DataFrame:
    """Measure several models into one study database; return their rows in one table.

    ``models``: bundles, spec strings or :class:`ModelSource` s (built one at a time, as the executor
    needs them: a Ray cluster starts on the first model while the next is prepared), each optionally
    paired with its own :class:`MeasureConfig`. A model that cannot be prepared (a missing checkpoint,
    say) is skipped, the others are measured, and one error at the end names it; rerunning resumes.
    """
    config = _config(config, overrides, data)
    executor = executor or LocalExecutor()
    probe = executor.check(device)
    items = [m if isinstance(m, tuple) else (m, config) for m in models]
    failed: list[str] = []

    def plans() -> Iterator[MeasurePlan]:
        for model, cfg in items:
            try:
                plan = plan_measurement(as_bundle(model, None), data, cfg, device=torch.device(device),
                                        probe_device=probe, progress=progress)
            except LayercritError as e:  # one bad model does not stop the others
                failed.append(f"{_describe(model)}: {e}")
                log.warning(f"skipping {failed[-1]}")
                continue
            yield plan

    with contextlib.ExitStack() as kept:
        for model, _ in items:
            if isinstance(model, (ModelBundle, nn.Module)):
                kept.enter_context(kept_as_found(model.model if isinstance(model, ModelBundle) else model))
        with Recorder.open(store) as recorder:
            tables = executor.run(plans(), recorder, progress=progress)
    if failed:
        raise LayercritError(f"{len(failed)} model(s) could not be measured, the others are saved: {failed[0]}"
                             + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def _config(config: MeasureConfig | None, overrides: dict[str, Any], data: Data) -> MeasureConfig:
    """The settings: ``config`` (default: MeasureConfig()) with ``overrides``. Data already drawn (an
    EvalData) is measured whole unless ``samples`` is given: the default 10,000 is for drawing from a folder."""
    if config is not None and not isinstance(config, MeasureConfig):
        raise ConfigError(f"{{config}} must be a MeasureConfig, got {type(config).__name__} (settings such as "
                          "trials=1 are keyword arguments of measure())", ("config",))
    if config is None and "samples" not in overrides and isinstance(data, EvalData):
        overrides = {**overrides, "samples": None}
    return (config or MeasureConfig()).replace(**overrides)


def as_bundle(model: Model, factory: Callable[[], nn.Module] | None, *, normalize: Any = AUTO,
              model_id: str | None = None, category: str | None = None) -> ModelBundle:
    """A bundle from anything :func:`measure` takes as a model."""
    chosen = not (isinstance(normalize, str) and normalize == AUTO)
    if isinstance(model, (ModelBundle, ModelSource)):
        given = [n for n, v in (("factory", factory), ("model_id", model_id), ("category", category))
                 if v is not None]
        if chosen:
            given.insert(0, "normalize")
        if given:
            how = "create_model(..., normalize=..., name=..., category=...)" if isinstance(model, ModelBundle) \
                else "its options"
            raise ConfigError(f"{', '.join('{' + g + '}' for g in given)} apply to a model spec or an nn.Module: "
                              f"this {type(model).__name__} already knows them (set them with {how})", tuple(given))
        return model if isinstance(model, ModelBundle) else build_source(model)
    if isinstance(model, str):
        if factory is not None:
            raise ConfigError("{factory} applies to an nn.Module: a model spec builds its own", ("factory",))
        return create_model(model, normalize=normalize, name=model_id, category=category)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{{model}} must be a ModelBundle, a model spec or an nn.Module, got {type(model).__name__}",
                          ("model",))
    return ModelBundle.from_module(model, factory, normalize=normalize, model_id=model_id, category=category)


def _describe(model: Model) -> str:
    if isinstance(model, str):
        return model
    if isinstance(model, ModelSource):
        return model.spec
    if isinstance(model, ModelBundle):
        return model.model_id
    return type(model).__name__
