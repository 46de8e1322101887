"""``measure()``: the study's measurement of one model; ``measure_models()``: several into one database.

Both are thin: check the settings (:class:`MeasureConfig`), plan (:mod:`.plan`), and hand the plans
to an executor (:class:`LocalExecutor` by default; ``layercrit.scale.ray.RayExecutor`` spreads them
over a Ray cluster), which records through a :class:`Recorder`: rows are committed as they complete,
and a rerun resumes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Union

import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ..data import EvalData
from ..data.adapters import (IMAGES, INPUT, as_eval_data, check_data_space, data_space_arg, is_folder,
                             is_tensor_pair, with_num_classes)
from ..errors import ConfigError, LayercritError
from ..models import ModelBundle, ModelSource, NormalizedModel, build_source, create_model
from ..models.registry import AUTO
from ..models.state import kept_as_found
from ..store import ResultStore
from .config import MeasureConfig
from .executor import Executor, LocalExecutor
from .plan import MeasurePlan, plan_measurement
from .recorder import Recorder

log = logging.getLogger("layercrit")

Model = Union[ModelBundle, nn.Module, ModelSource, str]
Data = Union[EvalData, str, "os.PathLike[str]", Dataset, DataLoader, tuple[torch.Tensor, torch.Tensor]]
Store = Union[ResultStore, str, "os.PathLike[str]", None]


class _FromConfig:
    """The default of :func:`measure`'s settings: the value of ``config`` (a :class:`MeasureConfig`, or the
    defaults). Not None: None is a value of some settings (``samples=None``: every image)."""

    def __repr__(self) -> str:
        return "<from config>"


FROM_CONFIG: Any = _FromConfig()
_FIELDS = frozenset(f.name for f in MeasureConfig.options())


def measure(model: Model, data: Data, config: MeasureConfig | None = None, *,
            reset: str | Sequence[str] = FROM_CONFIG, trials: int = FROM_CONFIG, seed: int = FROM_CONFIG,
            samples: int | str | None = FROM_CONFIG, layers: str | Sequence[str] = FROM_CONFIG,
            unit: str = FROM_CONFIG, types: str | Sequence[str] = FROM_CONFIG, output: str | Callable[..., Any]
            = FROM_CONFIG, temperature: float | str | None = FROM_CONFIG, calibration_samples: int = FROM_CONFIG,
            target_ci: float | None = FROM_CONFIG, engine: str = FROM_CONFIG, precision: str = FROM_CONFIG,
            batch_size: int | str = FROM_CONFIG, max_memory: int | str | None = FROM_CONFIG,
            channels_last: bool = FROM_CONFIG, input_size: int | None = FROM_CONFIG, split: str = FROM_CONFIG,
            data_cache: bool = FROM_CONFIG, trust_pickle: bool = FROM_CONFIG,
            store: Store = None, executor: Executor | None = None, device: str | torch.device = "cpu",
            progress: bool = True, factory: Callable[[], nn.Module] | None = None, normalize: Any = AUTO,
            data_space: str = IMAGES, **overrides: Any) -> pd.DataFrame:
    """Measure layer criticality: reset each unit (layer or block) in turn and compare the model's outputs
    with the unmodified model's on the same images.

    The settings (``reset`` ... ``trust_pickle``) are the fields of :class:`MeasureConfig`: each defaults to
    ``config``'s value (``<from config>``; without ``config``, :class:`MeasureConfig`'s default, given below),
    and a keyword given here overrides it. A bad value is a :class:`~layercrit.errors.ConfigError` naming the
    parameter. The model is left as it was found: same mode, device and memory format, same weights.

    Args:
        model: a :class:`ModelBundle` (from :func:`layercrit.create_model`: its model id and category are the
            run's), a model spec (``"arch:cifar_resnet50"``, ``"file:w.safetensors"``) or :class:`ModelSource`,
            or any ``nn.Module`` (then give ``normalize``, and ``factory`` for ``random`` resets). Its name and
            category in the results are the bundle's: ``create_model(spec, name=..., category=...)``, or
            ``ModelBundle.from_module(module, factory, normalize=..., model_id=..., category=...)`` (default:
            the class name, no category).
        data: the images, with integer labels: a data folder (``samples`` images drawn with ``seed``), an
            :class:`EvalData` (all of it unless ``samples`` is given), a pair of tensors ``(x, y)`` (``x``
            ``[N, C, H, W]``; as an EvalData), a ``torch.utils.data.Dataset`` of ``(image, label)`` items (the
            image a PIL image, resized for the model as folder images are, or a ``[C, H, W]`` tensor; drawn from
            as a folder), or a ``DataLoader`` (consumed in its own order, the first ``samples`` images).
        config: a :class:`MeasureConfig` holding the settings (checked when it is made); keywords override it.
        reset: what a unit is reset to, one kind or several: ``"random"`` (default: freshly initialized
            weights), ``"zero"``, ``"init:<checkpoint>"``, ``"interpolate:<alpha>"``, ``"noise:<sigma>"``,
            ``"remove"`` (with ``unit="block"``).
        trials: trials of stochastic resets (default 3); deterministic ones run trial 0 only.
        seed: seed of the image draw and of the reset draws (default 0).
        samples: images measured (default 10,000 drawn from a folder or Dataset, all of an EvalData or tensors,
            the first 10,000 of a DataLoader); None or ``"all"``: every image.
        layers: glob patterns over module names; a leading ``!`` excludes (default: all layers).
        unit: ``"layer"`` (default: one conv/linear/... layer per unit, the study) or ``"block"`` (one
            residual block per unit).
        types: layer kinds measured with ``unit="layer"``: some of conv, linear, norm, embedding (default
            conv, linear).
        output: what is compared (default ``"probs"``: the softmax, the study's criticality): ``"logits"``,
            ``"module:<name>"`` (that module's output, e.g. a headless backbone's pooled features), or a
            callable ``(model, x) -> tensor``; the class metrics are empty for features.
        temperature: divide the logits by T before every softmax metric (default None: T = 1); ``"calibrate"``
            fits T per model on ``calibration_samples`` held-out images.
        calibration_samples: held-out images to fit T on with ``temperature="calibrate"`` (default 2,000).
        target_ci: adaptive sampling: stop a (layer, trial) once the 95 % confidence half-width of its
            criticality is at most this many percentage points (default None: every image).
        engine: ``"cached"`` (default: run the model once per batch, recompute only what a reset changes) or
            ``"naive"`` (a full forward pass per reset).
        precision: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"`` (for GPUs).
        batch_size: images per batch (default 128), or ``"auto"``: the fastest size whose memory fits
            ``max_memory``.
        max_memory: with ``batch_size="auto"``: the memory budget, e.g. ``"12G"`` or ``"40%"``.
        channels_last: convolutions in channels-last memory format (default True).
        input_size: the resolution images are loaded at (default: the model's).
        split: the split of a torchvision-format CIFAR-10 folder (default ``"test"``).
        data_cache: keep decoded folder images in ``$LAYERCRIT_CACHE/data`` for later runs (default True).
        trust_pickle: allow checkpoints that need arbitrary unpickling (default False; files you trust only).
        store: a results database (path or :class:`ResultStore`): rows are saved as they complete, and a rerun
            resumes; a rerun with another model, data or settings is refused.
        executor: where the jobs run (default :class:`LocalExecutor`: here, on ``device``;
            ``layercrit.scale.ray.RayExecutor`` spreads them over a Ray cluster).
        device: where the model runs (default ``"cpu"``).
        progress: show progress bars.
        factory: for an ``nn.Module``: builds a freshly initialized instance of its architecture, what
            ``random`` resets draw from (without one, measure ``reset="zero"`` or ``"init:<checkpoint>"``).
        normalize: for an ``nn.Module`` (required): ``(mean, std)``, the input normalization its training used,
            or None for a module that takes [0, 1] images as they are.
        data_space: what tensor values mean: ``"images"`` (default: [0, 1] images or 8-bit, and the model's
            normalization is applied to them, as to folder images; float images outside [0, 1]: 0-255 values,
            normalized or mean-subtracted ones, are refused) or ``"input"`` (float tensors already in the network's input space,
            e.g. from a ``Normalize`` transform: fed as they are, the model's normalization is not applied).
        **overrides: any other :class:`MeasureConfig` field (e.g. of a subclass); an unknown name is an error.

    Returns:
        A tidy ``pandas.DataFrame``, one row per unit x reset x trial in the order measured, with the columns
        :data:`TIDY_COLUMNS` (the same with or without ``store``): ``model_id``, ``layer``, ``reset``,
        ``trial``, ``criticality`` (percent), ``top1_acc``, ``base_top1_acc``, ...

    Examples:
        A module already in memory, measured on tensors (``normalize=None``: it takes [0, 1] images):

        >>> import torch
        >>> from torch import nn
        >>> import layercrit as lc
        >>> def make():
        ...     return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                          nn.Linear(8, 4))
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> net = make()
        >>> x, y = torch.rand(32, 3, 16, 16), torch.randint(0, 4, (32,))
        >>> df = lc.measure(net, (x, y), factory=make, normalize=None, reset=["random", "zero"], trials=2,
        ...                 progress=False)
        >>> len(df), sorted(set(df.layer)), df.groupby("reset").size().to_dict()
        (6, ['0', '4'], {'random': 4, 'zero': 2})
        >>> list(df.columns[:8])
        ['model_id', 'category', 'model_spec', 'layer', 'layer_index', 'layer_type', 'unit', 'reset']

        A model from its spec, on a data folder, saved to a database (a rerun resumes):

        >>> model = lc.create_model("arch:cifar_resnet50")
        >>> df = lc.measure(model, "../shared/data/cifar10/test", samples=500, layers=["layer4.*", "fc"],
        ...                 store="study.db")  # doctest: +SKIP
    """
    settings = {k: v for k, v in locals().items() if k in _FIELDS and v is not FROM_CONFIG}  # (first: the params)
    config = _config(config, {**settings, **overrides}, data)
    space = data_space_arg(data_space)
    executor = executor or LocalExecutor()
    probe = executor.check(device)  # before any loading
    caller = model.model if isinstance(model, ModelBundle) else model  # left as found, even by as_bundle's eval()
    with kept_as_found(caller if isinstance(caller, nn.Module) else nn.Module()):
        bundle = as_bundle(model, factory, normalize=normalize)
        bundle, data, config = _prepared_data(bundle, data, config, space)
        plan = plan_measurement(bundle, data, config, device=torch.device(device), probe_device=probe,
                                progress=progress)
        if space == INPUT:
            plan.record["data_space"] = INPUT
        with Recorder.open(store) as recorder:
            (table,) = executor.run([plan], recorder, progress=progress)
    return table


def measure_models(models: Iterable[Model | tuple[Model, MeasureConfig]], data: Data,
                   config: MeasureConfig | None = None, *, store: Store = None, executor: Executor | None = None,
                   device: str | torch.device = "cpu", progress: bool = True, **overrides: Any) -> pd.DataFrame:
    """Measure several models on the same data into one study database; return their rows in one table.

    Args:
        models: bundles, spec strings or :class:`ModelSource` s (built one at a time, as the executor needs
            them: a Ray cluster starts on the first model while the next is prepared), each optionally paired
            with its own :class:`MeasureConfig`. A model that cannot be prepared (a missing checkpoint, say)
            is skipped, the others are measured, and one error at the end names it; rerunning resumes.
        data: the images, as for :func:`measure` (a folder, an EvalData, a Dataset, a DataLoader, tensors).
        config: the settings of the models not paired with their own.
        store: the results database (path or :class:`ResultStore`); progress is saved as it happens.
        executor: where the jobs run (default :class:`LocalExecutor`).
        device: where the models run (default ``"cpu"``).
        progress: show progress bars.
        **overrides: :class:`MeasureConfig` fields overriding ``config`` (``trials=1``, ``samples=500``, ...).

    Returns:
        The rows of every model, one table with the columns of :func:`measure`'s.

    Examples:
        >>> import layercrit as lc
        >>> models = ["zoo:tv_resnet50", "zoo:robust_resnet50_l2_eps0.1"]
        >>> df = lc.measure_models(models, "../shared/data/imagenet-sample/val", trials=1, samples=500,
        ...                        store="study.db")  # doctest: +SKIP
    """
    config = _config(config, overrides, data)
    executor = executor or LocalExecutor()
    probe = executor.check(device)
    items = [m if isinstance(m, tuple) else (m, config) for m in models]
    failed: list[str] = []

    def plans() -> Iterator[MeasurePlan]:
        for model, cfg in items:
            try:
                bundle, model_data, cfg = _prepared_data(as_bundle(model, None), data, cfg, IMAGES)
                plan = plan_measurement(bundle, model_data, cfg, device=torch.device(device), probe_device=probe,
                                        progress=progress)
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
    if config is None and "samples" not in overrides and (isinstance(data, EvalData) or is_tensor_pair(data)):
        overrides = {**overrides, "samples": None}
    return (config or MeasureConfig()).replace(**overrides)


def _prepared_data(bundle: ModelBundle, data: Data, config: MeasureConfig,
                   space: str) -> tuple[ModelBundle, EvalData | str | os.PathLike[str], MeasureConfig]:
    """What the plan takes: a folder, or an EvalData (tensors, a Dataset or a DataLoader converted: drawn, and
    ``samples`` set to what was drawn), checked against ``data_space``; with ``data_space="input"`` the bundle
    without its normalization (the tensors are what the network takes)."""
    if is_folder(data):
        if space == INPUT:
            raise ConfigError("{data_space} 'input' is for tensors in the network's input space: a data folder holds "
                              "images (leave {data_space} out)", ("data_space",))
        return bundle, data, config  # type: ignore[return-value]
    whole = config.temperature == "calibrate"  # the plan draws measured and held-out images from all of it
    # adaptive sampling stops on a prefix, which must be a random one: data layercrit did not draw (class-sorted
    # tensors, say) is measured in the order the run's seed fixes
    shuffle = config.target_ci is not None and not whole
    if isinstance(data, EvalData) and shuffle:
        data = as_eval_data(data, samples=config.samples, seed=config.seed, data_space=space, shuffle=True)
        config = config.replace(samples=len(data))
    if not isinstance(data, EvalData):
        if whole and (isinstance(data, (DataLoader, IterableDataset)) or not hasattr(data, "__len__")):
            raise ConfigError("{temperature} calibrate fits T on images held out from the measured ones, drawn "
                              "from the same data, but a DataLoader is consumed in its own order: give a Dataset, "
                              "tensors, an EvalData or a folder", ("temperature", "data"))
        data = as_eval_data(data, input_size=config.input_size or bundle.input_size,
                            samples=None if whole else config.samples, seed=config.seed, data_space=space,
                            draw=not whole, shuffle=shuffle)
        data = with_num_classes(data, bundle.num_classes or _outputs(bundle.model, data))
        if not whole:
            config = config.replace(samples=len(data))  # drawn (or consumed) already
    check_data_space(data, normalizes=bundle.model.normalize, data_space=space)
    if space == INPUT and bundle.model.normalize:
        source = bundle.source
        if source is not None:  # rebuilt elsewhere (a Ray worker) without it too
            source = dataclasses.replace(source, options=dataclasses.replace(source.options, normalize=None,
                                                                             mean=None, std=None))
        bundle = dataclasses.replace(bundle, model=NormalizedModel(bundle.network, None, None).eval(), source=source)
    return bundle, data, config


def _outputs(model: nn.Module, data: EvalData) -> int:
    """How many class scores the model returns for one image of ``data`` (0: not a row of scores)."""
    param = next(model.parameters(), None)
    x = data.images[:1].to(param.device if param is not None else "cpu")
    with torch.inference_mode():
        out = model(x.float().div(255) if x.dtype == torch.uint8 else x.float())
    return int(out.shape[1]) if isinstance(out, torch.Tensor) and out.dim() == 2 else 0


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
