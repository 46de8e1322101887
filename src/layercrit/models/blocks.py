"""Residual-block surgery: which classes are residual blocks, and removing a block's branch.

A residual block computes ``act(branch(x) + shortcut(x))`` (ResNets; ``shortcut`` is the
identity or a downsample path, ``act`` a ReLU or nothing) or a chain of ``x + branch_i(x)``
(pre-norm transformer blocks, ``act`` none). For each known block class a :class:`BlockKind`
names the shortcut submodule, the activation after the sum, and the *output* parameters of
the branch: setting those to zero makes the branch's output exactly zero (the last norm
layer's scale and shift in a ResNet block, the output projections in a ViT block). Removing
a block (Veit et al., 2016) is therefore the same computation whether it is done

- in place, by zeroing the output parameters (``--reset remove`` while measuring, see
  :mod:`layercrit.resets`), or
- structurally, by replacing the block with :class:`RemovedBlock` (``act(shortcut(x))``),
  which is what ``layercrit compress`` saves and what architecture variants
  (``<arch>:remove=...``) build: a smaller, faster network.

Other block classes can be registered with :func:`register_block`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.nn as nn
from timm.models import resnet as timm_resnet
from timm.models import vision_transformer as timm_vit
from torchvision.models import resnet as tv_resnet

from ..errors import LayercritError


@dataclass(frozen=True)
class BlockKind:
    shortcut: str | None  # attribute holding the shortcut path (None or a None attribute: identity)
    act: str | None  # attribute applied after the residual sum, kept when the branch is removed
    outputs: tuple[str, ...]  # parameters whose zeroing makes every residual branch output exactly 0


_BLOCK_KINDS: dict[type[nn.Module], BlockKind] = {}


B = TypeVar("B", bound=type[nn.Module])


def register_block(cls: B | None = None, *, shortcut: str | None, act: str | None, outputs: tuple[str, ...]) -> Any:
    """Teach block discovery (``unit="block"``) and block removal a residual block class: a call,
    ``register_block(Bottleneck, shortcut="downsample", act="relu", outputs=(...))``, or a decorator,
    ``@register_block(shortcut=..., act=..., outputs=...)`` above the class (the class is its own key)."""

    def decorator(block_cls: B) -> B:
        _BLOCK_KINDS[block_cls] = BlockKind(shortcut, act, tuple(outputs))
        return block_cls

    return decorator(cls) if cls is not None else decorator


register_block(tv_resnet.Bottleneck, shortcut="downsample", act="relu", outputs=("bn3.weight", "bn3.bias"))
register_block(tv_resnet.BasicBlock, shortcut="downsample", act="relu", outputs=("bn2.weight", "bn2.bias"))
register_block(timm_resnet.Bottleneck, shortcut="downsample", act="act3", outputs=("bn3.weight", "bn3.bias"))
register_block(timm_resnet.BasicBlock, shortcut="downsample", act="act2", outputs=("bn2.weight", "bn2.bias"))
register_block(timm_vit.Block, shortcut=None, act=None,
               outputs=("attn.proj.weight", "attn.proj.bias", "mlp.fc2.weight", "mlp.fc2.bias"))


def block_kind(module: nn.Module) -> BlockKind | None:
    return _BLOCK_KINDS.get(type(module))


def known_block_classes() -> list[str]:
    return sorted(f"{c.__module__}.{c.__name__}" for c in _BLOCK_KINDS)


def branch_parameters(block: nn.Module, kind: BlockKind) -> tuple[str, ...]:
    """Names (relative to the block) of the residual branch's parameters: all but the shortcut's."""
    skip = f"{kind.shortcut}." if kind.shortcut else None
    return tuple(n for n, _ in block.named_parameters() if not (skip and n.startswith(skip)))


class RemovedBlock(nn.Module):
    """What is left of a residual block without its branch: ``act(shortcut(x))``.

    The shortcut keeps its attribute name (``downsample``), so its layers keep their names
    (``layer2.0.downsample.0``) and line up with the full model's in reports.
    """

    def __init__(self, shortcut: nn.Module | None = None, act: nn.Module | None = None,
                 shortcut_name: str = "downsample"):
        super().__init__()
        self.shortcut_name = shortcut_name
        setattr(self, shortcut_name, shortcut if shortcut is not None else nn.Identity())
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.act(getattr(self, self.shortcut_name)(x))


def removed(block: nn.Module) -> RemovedBlock:
    kind = block_kind(block)
    if kind is None:
        raise LayercritError(f"{type(block).__name__} is not a residual block layercrit knows how to remove")
    shortcut = getattr(block, kind.shortcut, None) if kind.shortcut else None
    act = getattr(block, kind.act, None) if kind.act else None
    if act is not None and getattr(act, "inplace", False):  # in place on the shortcut's input would corrupt the
        act = copy.copy(act)                                  # previous block's output, which autograd still needs
        act.inplace = False                                   # when fine-tuning
    return RemovedBlock(shortcut, act, kind.shortcut or "downsample")


def remove_blocks(network: nn.Module, names: list[str]) -> nn.Module:
    """Replace the named blocks of ``network`` (in place) by their shortcuts; returns ``network``."""
    for name in names:
        try:
            block = network.get_submodule(name)
        except AttributeError:
            raise LayercritError(f"no block named '{name}' in {type(network).__name__}: "
                                 "list blocks with `layercrit layers --unit block`") from None
        if isinstance(block, RemovedBlock):
            raise LayercritError(f"block '{name}' is removed already")
        parent_name, _, child = name.rpartition(".")
        parent = network.get_submodule(parent_name) if parent_name else network
        setattr(parent, child, removed(block))
    return network
