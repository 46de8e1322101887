"""Architecture registry: names -> factories, in the spirit of timm's registry.

An architecture entry knows how to build a freshly initialized model (the factory a
random reset draws from), its default class count, input resolution and the input
normalization its weights expect. Anything timm can build is an architecture too, and so is a
callable in the user's own code (``path/to/file.py:callable``, ``package.module:callable``;
see :mod:`.user_arch`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import timm
import torch.nn as nn
import torchvision.models as tvm

from .. import validate
from ..errors import ConfigError, LayercritError
from .blocks import remove_blocks
from .user_arch import USAGE, is_user_arch, load_user_arch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class ArchSpec:
    """What is needed to build and feed a fresh instance of one architecture."""

    name: str
    build: Callable[..., nn.Module]  # build(num_classes=...) -> freshly initialized model
    num_classes: int | None  # None: unknown (a user's callable without a default)
    input_size: int | None  # None: unknown
    mean: tuple[float, ...] | None = IMAGENET_MEAN  # mean/std None with normalization_known: raw [0, 1] input
    std: tuple[float, ...] | None = IMAGENET_STD
    source: str = "layercrit"
    extra: dict[str, Any] = field(default_factory=dict)
    normalization_known: bool = True  # False: the input normalization must be chosen when the model is created
    code: dict[str, str] | None = None  # a user's architecture: its file, callable and the file's sha256


_ARCHS: dict[str, ArchSpec] = {}
_PENDING: set[str] = set()  # register_arch(name, ...) called without a factory whose decorator was never applied


Build = Callable[..., nn.Module]
AUTO: Any = "auto"  # normalize= default: the mean/std given, else unknown (chosen when the model is created)


def register_arch(name: str, build: Build | None = None, *, num_classes: int, input_size: int,
                  mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                  normalize: Any = AUTO) -> Any:
    """Register ``build(num_classes=...) -> nn.Module`` (a function or an ``nn.Module`` class) under ``name``.

    A call, ``register_arch("net", build, num_classes=10, input_size=32, mean=..., std=...)``, or a
    decorator, ``@register_arch("net", num_classes=10, input_size=32, ...)`` above the function. The
    input normalization its weights expect: ``mean``/``std`` (or ``normalize=(mean, std)``),
    ``normalize=None`` for raw [0, 1] input, or neither: then each model of it must be given one when
    it is created (``create_model(..., normalize=...)``, ``--mean/--std`` or ``--normalize none``).
    """
    try:
        validate.text(name, "name")
        num_classes = validate.integer(num_classes, "num_classes", low=1, high=validate.MAX_NUM_CLASSES,
                                       what="a class count")
        input_size = validate.integer(input_size, "input_size", low=1, high=validate.MAX_INPUT_SIZE,
                                      what="a size in pixels")
        if normalize is not AUTO:
            if mean is not None or std is not None:
                raise LayercritError("give mean/std or normalize, not both")
            if normalize is not None:
                if not isinstance(normalize, (tuple, list)) or len(normalize) != 2:
                    raise LayercritError(f"normalize {normalize!r}: give (mean, std) or None (raw [0, 1] input)")
                mean, std = normalize
        m, s = validate.normalization(mean, std, prefix="")
    except ConfigError:
        raise
    except LayercritError as e:
        raise LayercritError(f"register_arch('{name}'): {e}") from None
    known = m is not None or normalize is None

    def decorator(fn: Build) -> Build:
        if not callable(fn):
            raise LayercritError(f"register_arch('{name}'): {fn!r} is not a function or class that builds the model")
        _ARCHS[name] = ArchSpec(name, fn, num_classes, input_size, m, s, normalization_known=known)
        _PENDING.discard(name)
        return fn

    if build is not None:
        decorator(build)
        return build
    if name not in _ARCHS:
        _PENDING.add(name)  # a decorator nobody applied registers nothing: get_arch says how to use it
    return decorator


def list_archs() -> list[str]:
    """Names registered by layercrit itself (timm's names are accepted as well)."""
    return sorted(_ARCHS)


REMOVE_MARK = ":remove="  # "<arch>:remove=layer3.2,layer4.1": <arch> without those residual blocks


def variant_name(base: str, removed_blocks: list[str]) -> str:
    """Architecture name of ``base`` with ``removed_blocks`` replaced by their shortcuts."""
    base_name, _, already = base.partition(REMOVE_MARK)
    blocks = [b for b in already.split(",") if b] + list(removed_blocks)
    return f"{base_name}{REMOVE_MARK}{','.join(blocks)}" if blocks else base_name


def _variant(name: str) -> ArchSpec:
    base_name, _, blocks = name.partition(REMOVE_MARK)
    base = get_arch(base_name)
    names = [b for b in blocks.split(",") if b]

    def build(num_classes: int) -> nn.Module:
        # Built as the full architecture, then cut: the same RNG draws as the base for the layers kept.
        return remove_blocks(base.build(num_classes=num_classes), names)

    return dataclasses.replace(base, name=name, build=build)


def get_arch(name: str) -> ArchSpec:
    """Look up a layercrit architecture, else a timm model name, else fail clearly.

    ``<arch>:remove=<block>,<block>`` is ``<arch>`` with those residual blocks removed (what
    ``layercrit compress`` saves)."""
    if REMOVE_MARK in name:
        return _variant(name)
    if name in _ARCHS:
        return _ARCHS[name]
    if name in _PENDING:
        raise LayercritError(
            f"architecture '{name}' was never registered: register_arch('{name}', ...) was called without the "
            f"function that builds it; pass it, register_arch('{name}', build, num_classes=..., input_size=...), "
            "or put @register_arch(...) above the function as a decorator")
    if is_user_arch(name):
        return user_arch_spec(name)
    if name.startswith("torchvision/"):
        return _torchvision_arch(name.split("/", 1)[1])
    if timm.is_model(name):
        return _timm_arch(name)
    raise LayercritError(
        f"unknown architecture '{name}': use one of {', '.join(list_archs())}, "
        f"a timm model name (see timm.list_models()), torchvision/<name>, or your own code: {USAGE} "
        "(a function or class that builds the model)"
    )


def user_arch_spec(reference: str) -> ArchSpec:
    """The architecture a callable in the user's code builds: class count from its ``num_classes``
    default (else unknown), input size and normalization unknown (given when a model is created)."""
    arch = load_user_arch(reference)
    return ArchSpec(reference, arch.build, arch.default_num_classes(), None, None, None, source="user",
                    extra={"user_arch": arch}, normalization_known=False, code=arch.identity)


def _timm_arch(name: str) -> ArchSpec:
    cfg = timm.models.get_pretrained_cfg(name) or None
    num_classes = getattr(cfg, "num_classes", None) or 1000
    input_size = (getattr(cfg, "input_size", None) or (3, 224, 224))[-1]
    mean = tuple(getattr(cfg, "mean", None) or IMAGENET_MEAN)
    std = tuple(getattr(cfg, "std", None) or IMAGENET_STD)

    def build(num_classes: int) -> nn.Module:
        return timm.create_model(name, pretrained=False, num_classes=num_classes)

    return ArchSpec(name, build, num_classes, input_size, mean, std, source="timm")


def _torchvision_arch(name: str) -> ArchSpec:
    if name not in tvm.list_models():
        raise LayercritError(f"unknown torchvision model '{name}': see torchvision.models.list_models()")

    def build(num_classes: int) -> nn.Module:
        return tvm.get_model(name, weights=None, num_classes=num_classes)

    return ArchSpec(f"torchvision/{name}", build, 1000, 224, source="torchvision")
