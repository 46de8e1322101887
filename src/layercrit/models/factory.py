"""``create_model(spec)``: one entry point from a model spec string to a measurable model.

Specs: ``arch:<name>`` (fresh, seeded), ``timm:<name>`` (pretrained), ``torchvision:<name>[:<weights>]``
(pretrained), ``file:<path>`` with ``arch=`` (a .safetensors or state-dict checkpoint; a .safetensors
file written by layercrit records its architecture), ``zoo:<id>`` (a model of
the study's zoo, see ``layercrit.zoo``; ``checkpoint=`` points at a file downloaded by hand).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from ..errors import LayercritError
from .checkpoint import checkpoint_info, load_into, load_state_dict, weights_checksum
from .registry import ArchSpec, get_arch
from .wrapper import NormalizedModel

SPEC_KINDS = ("arch", "timm", "torchvision", "file", "zoo")


@dataclass
class ModelBundle:
    """A model ready for measurement, plus how to build fresh instances of its architecture."""

    model: NormalizedModel  # trained network inside its normalization wrapper, eval mode
    factory: Callable[[], nn.Module]  # builds a freshly initialized (unwrapped) network; uses torch's RNG
    spec: str
    arch: str
    num_classes: int
    input_size: int
    model_id: str
    category: str | None = None  # e.g. the zoo registry's category; None where unknown

    @property
    def network(self) -> nn.Module:
        return self.model.model

    def checksum(self) -> str:
        return weights_checksum(self.network)


def build_seeded(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a fresh instance from ``seed`` alone, leaving the global RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def _factory(arch: ArchSpec, num_classes: int) -> Callable[[], nn.Module]:
    return lambda: arch.build(num_classes=num_classes)


def create_model(spec: str, *, arch: str | None = None, num_classes: int | None = None,
                 init_seed: int = 0, name: str | None = None, trust_pickle: bool = False,
                 mean=None, std=None, checkpoint: str | None = None) -> ModelBundle:
    """Resolve a model spec into a :class:`ModelBundle` (eval mode, on the CPU)."""
    kind, _, rest = spec.partition(":")
    if kind not in SPEC_KINDS or not rest:
        raise LayercritError(
            f"unknown model spec '{spec}': use arch:<name>, timm:<name>, torchvision:<name>[:<weights>], "
            "file:<path> with --arch, or zoo:<id>"
        )
    if checkpoint is not None and kind != "zoo":
        raise LayercritError(f"--checkpoint applies to zoo:<id> models; for {spec} use file:<path> --arch <name>")
    if kind == "zoo":
        return _zoo(rest, spec, num_classes=num_classes, name=name, trust_pickle=trust_pickle, mean=mean, std=std,
                    checkpoint=checkpoint)
    if kind == "arch":
        a = get_arch(rest)
        nc = num_classes or a.num_classes
        net = build_seeded(_factory(a, nc), init_seed)
        default_id = rest
    elif kind == "file":
        recorded = checkpoint_info(rest)  # files written by layercrit record arch, classes, normalization
        arch = arch or recorded.arch
        if not arch:
            raise LayercritError(f"{spec} needs --arch <architecture> to know what network the weights belong to")
        a = get_arch(arch)
        nc = num_classes or recorded.num_classes or a.num_classes
        if recorded.normalization is not None and mean is None and std is None:
            mean, std = recorded.normalization
            if mean is None:  # recorded as raw [0, 1] input
                model = NormalizedModel(_load_file(a, nc, rest, trust_pickle, init_seed), None, None).eval()
                return ModelBundle(model, _factory(a, nc), spec, a.name, nc, a.input_size, name or Path(rest).stem)
        net = _load_file(a, nc, rest, trust_pickle, init_seed)
        default_id = Path(rest).stem
    elif kind == "timm":
        a = get_arch(rest)
        nc = num_classes or a.num_classes
        net = _download("timm", rest, lambda: __import__("timm").create_model(rest, pretrained=True, num_classes=nc))
        cfg = getattr(net, "pretrained_cfg", {}) or {}
        a = ArchSpec(a.name, a.build, nc, cfg.get("input_size", (3, a.input_size, a.input_size))[-1],
                     tuple(cfg.get("mean", a.mean)), tuple(cfg.get("std", a.std)), source="timm")
        default_id = rest
    else:  # torchvision
        net, a, nc = _torchvision(rest, num_classes)
        default_id = rest.split(":")[0]
    mean = a.mean if mean is None else tuple(mean)
    std = a.std if std is None else tuple(std)
    model = NormalizedModel(net, mean, std).eval()
    return ModelBundle(model, _factory(a, nc), spec, a.name, nc, a.input_size, name or default_id)


def _load_file(a: ArchSpec, nc: int, path: str, trust_pickle: bool, init_seed: int) -> nn.Module:
    state = load_state_dict(path, trust_pickle=trust_pickle)
    net = build_seeded(_factory(a, nc), init_seed)
    load_into(net, state, path)
    return net


def _zoo(model_id: str, spec: str, *, num_classes, name, trust_pickle, mean, std, checkpoint) -> ModelBundle:
    from ..zoo import get_zoo_model
    from ..zoo.load import load_zoo_network

    entry = get_zoo_model(model_id)
    if num_classes not in (None, entry.num_classes):  # before any download
        raise LayercritError(f"zoo:{model_id} has {entry.num_classes} classes; "
                             f"--num-classes {num_classes} does not fit")
    net, entry, _ = load_zoo_network(model_id, checkpoint, trust_pickle=trust_pickle)
    a = get_arch(entry.arch)  # the random reset draws from this architecture's own initializer
    if mean is None and std is None and not entry.normalized:
        mean_std = (None, None)  # the network takes raw [0, 1] input
    else:
        mean_std = (a.mean if mean is None else tuple(mean), a.std if std is None else tuple(std))
    model = NormalizedModel(net, *mean_std).eval()
    return ModelBundle(model, _factory(a, entry.num_classes), spec, a.name, entry.num_classes, a.input_size,
                       name or entry.id, entry.category)


def _download(kind: str, what: str, fn):
    try:
        return fn()
    except LayercritError:
        raise
    except Exception as e:
        raise LayercritError(
            f"could not get pretrained weights for {kind}:{what} ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}): "
            "connect to the internet, or save the weights to a file and use file:<path> --arch <name>"
        ) from None


def _torchvision(rest: str, num_classes: int | None):
    import dataclasses

    import torchvision.models as tvm

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
    if num_classes not in (None, nc):
        raise LayercritError(f"torchvision:{rest} has {nc} classes; --num-classes {num_classes} does not fit")
    net = _download("torchvision", rest, lambda: tvm.get_model(name, weights=weights))
    tf = weights.transforms()
    a = dataclasses.replace(a, num_classes=nc, input_size=tf.crop_size[0], mean=tuple(tf.mean), std=tuple(tf.std))
    return net, a, nc
