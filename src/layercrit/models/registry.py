"""Architecture registry: names -> factories, in the spirit of timm's registry.

An architecture entry knows how to build a freshly initialized model (the factory a
random reset draws from), its default class count, input resolution and the input
normalization its weights expect. Anything timm can build is an architecture too.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import timm
import torch.nn as nn
import torchvision.models as tvm

from ..errors import LayercritError
from .blocks import remove_blocks

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class ArchSpec:
    """What is needed to build and feed a fresh instance of one architecture."""

    name: str
    build: Callable[..., nn.Module]  # build(num_classes=...) -> freshly initialized model
    num_classes: int
    input_size: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    source: str = "layercrit"
    extra: dict[str, Any] = field(default_factory=dict)


_ARCHS: dict[str, ArchSpec] = {}


Build = Callable[..., nn.Module]


def register_arch(name: str, *, num_classes: int, input_size: int, mean: tuple[float, ...] = IMAGENET_MEAN,
                  std: tuple[float, ...] = IMAGENET_STD) -> Callable[[Build], Build]:
    """Decorator: register ``fn(num_classes=...) -> nn.Module`` under ``name``."""

    def decorator(fn: Build) -> Build:
        _ARCHS[name] = ArchSpec(name, fn, num_classes, input_size, tuple(mean), tuple(std))
        return fn

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
    if name.startswith("torchvision/"):
        return _torchvision_arch(name.split("/", 1)[1])
    if timm.is_model(name):
        return _timm_arch(name)
    raise LayercritError(
        f"unknown architecture '{name}': use one of {', '.join(list_archs())}, "
        "a timm model name (see timm.list_models()) or torchvision/<name>"
    )


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
