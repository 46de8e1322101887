"""``create_model(spec)``: one entry point from a model spec string to a measurable model.

Specs: ``arch:<name>`` (fresh, seeded), ``timm:<name>`` (pretrained), ``torchvision:<name>[:<weights>]``
(pretrained), ``file:<path>`` with ``arch=`` (a .safetensors or state-dict checkpoint; a .safetensors
file written by layercrit records its architecture), and the kinds plug-ins register in
:mod:`layercrit.model_specs` (``zoo:<id>``, a model of the study's zoo, see ``layercrit.zoo``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

import timm
import torch
import torch.nn as nn
import torchvision.models as tvm

from ..errors import LayercritError
from ..model_specs import get_spec_kind, register_spec_kind, spec_usages
from .bundle import ModelBundle, ModelOptions, ModelSource
from .checkpoint import checkpoint_info, load_into, load_state_dict
from .registry import ArchSpec, get_arch
from .wrapper import NormalizedModel


def build_seeded(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a fresh instance from ``seed`` alone, leaving the global RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def arch_factory(arch: ArchSpec, num_classes: int) -> Callable[[], nn.Module]:
    """Builds a freshly initialized network of ``arch`` with ``num_classes`` outputs."""
    return lambda: arch.build(num_classes=num_classes)


def _floats(values: Sequence[float] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(v) for v in values)


def create_model(spec: str, *, arch: str | None = None, num_classes: int | None = None,
                 init_seed: int = 0, name: str | None = None, trust_pickle: bool = False,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 checkpoint: str | None = None, category: str | None = None) -> ModelBundle:
    """Resolve a model spec into a :class:`ModelBundle` (eval mode, on the CPU) that knows its source.

    ``name`` is its model id in a results database (default: from the spec), ``category`` its
    category there (default: the zoo's, else none).
    """
    from .. import validate  # the rules the CLI and study files use too (issue 14)

    checked = validate.model_options(num_classes_=num_classes, init_seed=init_seed, mean=mean, std=std)
    num_classes, init_seed = checked["num_classes"], checked["init_seed"]
    options = ModelOptions(arch, num_classes, init_seed, name, trust_pickle, _floats(checked["mean"]),
                           _floats(checked["std"]), checkpoint, category)
    kind_name, _, rest = spec.partition(":")
    kind = get_spec_kind(kind_name)
    if kind is None or not rest:
        usages = spec_usages()
        raise LayercritError(f"unknown model spec '{spec}': use {', '.join(usages[:-1])}, or {usages[-1]}")
    if checkpoint is not None and not kind.takes_checkpoint:
        takes = " or ".join(spec_usages(taking_checkpoint=True)) or "no"
        raise LayercritError(f"--checkpoint applies to {takes} models; for {spec} use file:<path> --arch <name>")
    bundle = kind.create(rest, spec, options)
    return dataclasses.replace(bundle, source=ModelSource(spec, options), category=category or bundle.category)


def build_source(source: ModelSource) -> ModelBundle:
    """The model ``source`` describes, built again (e.g. in another process)."""
    return create_model(source.spec, **dataclasses.asdict(source.options))


def _bundle(net: nn.Module, a: ArchSpec, nc: int, spec: str, model_id: str, mean: Any, std: Any) -> ModelBundle:
    return ModelBundle(NormalizedModel(net, mean, std).eval(), arch_factory(a, nc), spec, a.name, nc, a.input_size,
                       model_id)


def _normalization(a: ArchSpec, o: ModelOptions) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return (a.mean if o.mean is None else o.mean), (a.std if o.std is None else o.std)


def _arch(rest: str, spec: str, o: ModelOptions) -> ModelBundle:
    a = get_arch(rest)
    nc = o.num_classes or a.num_classes
    net = build_seeded(arch_factory(a, nc), o.init_seed)
    return _bundle(net, a, nc, spec, o.name or rest, *_normalization(a, o))


def _file(rest: str, spec: str, o: ModelOptions) -> ModelBundle:
    recorded = checkpoint_info(rest)  # files written by layercrit record arch, classes, normalization
    arch = o.arch or recorded.arch
    if not arch:
        raise LayercritError(f"{spec} needs --arch <architecture> to know what network the weights belong to")
    a = get_arch(arch)
    nc = o.num_classes or recorded.num_classes or a.num_classes
    model_id = o.name or Path(rest).stem
    mean, std = _normalization(a, o)
    if recorded.normalization is not None and o.mean is None and o.std is None:
        mean, std = recorded.normalization  # (None, None): recorded as raw [0, 1] input
    state = load_state_dict(rest, trust_pickle=o.trust_pickle)
    net = build_seeded(arch_factory(a, nc), o.init_seed)
    load_into(net, state, rest)
    return _bundle(net, a, nc, spec, model_id, mean, std)


def _timm(rest: str, spec: str, o: ModelOptions) -> ModelBundle:
    a = get_arch(rest)
    nc = o.num_classes or a.num_classes
    net = _download("timm", rest, lambda: timm.create_model(rest, pretrained=True, num_classes=nc))
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    a = ArchSpec(a.name, a.build, nc, cfg.get("input_size", (3, a.input_size, a.input_size))[-1],
                 tuple(cfg.get("mean", a.mean)), tuple(cfg.get("std", a.std)), source="timm")
    return _bundle(net, a, nc, spec, o.name or rest, *_normalization(a, o))


def _torchvision(rest: str, spec: str, o: ModelOptions) -> ModelBundle:
    name, _, weights_name = rest.partition(":")
    a = get_arch(f"torchvision/{name}")
    enum = tvm.get_model_weights(name)
    try:
        weights = enum[weights_name or "DEFAULT"]
    except KeyError:
        raise LayercritError(
            f"unknown weights '{weights_name}' for torchvision:{name}: use one of {', '.join(w.name for w in enum)}"
        ) from None
    nc = len(weights.meta["categories"])
    if o.num_classes not in (None, nc):
        raise LayercritError(f"torchvision:{rest} has {nc} classes; --num-classes {o.num_classes} does not fit")
    net = _download("torchvision", rest, lambda: tvm.get_model(name, weights=weights))
    tf = weights.transforms()
    a = dataclasses.replace(a, num_classes=nc, input_size=tf.crop_size[0], mean=tuple(tf.mean), std=tuple(tf.std))
    return _bundle(net, a, nc, spec, o.name or name, *_normalization(a, o))


def _download(kind: str, what: str, fn: Callable[[], nn.Module]) -> nn.Module:
    from ..hub import hf_offline_if_unreachable, hub_host

    offline = False
    try:
        with hf_offline_if_unreachable() as offline:  # offline: fail at once instead of retrying for a minute
            return fn()
    except LayercritError:
        raise
    except Exception as e:
        if offline and kind == "timm":
            raise LayercritError(
                f"could not get pretrained weights for {kind}:{what}: {hub_host()[0]} cannot be reached (offline) "
                "and they are not in the local cache: connect to the internet, or save the weights to a file and "
                "use file:<path> --arch <name>") from None
        first = str(e).splitlines()[0][:120] if str(e) else ""
        raise LayercritError(
            f"could not get pretrained weights for {kind}:{what} ({type(e).__name__}: {first}): "
            "connect to the internet, or save the weights to a file and use file:<path> --arch <name>"
        ) from None


register_spec_kind("arch", _arch, usage="arch:<name>")
register_spec_kind("timm", _timm, usage="timm:<name>")
register_spec_kind("torchvision", _torchvision, usage="torchvision:<name>[:<weights>]")
register_spec_kind("file", _file, usage="file:<path> with --arch")
