"""Residual blocks as units: discovery, the residual branch's parameters, and block removal.

A residual block computes ``act(branch(x) + shortcut(x))`` (ResNets; ``shortcut`` is the
identity or a downsample path, ``act`` a ReLU or nothing) or a chain of ``x + branch_i(x)``
(pre-norm transformer blocks, ``act`` none). For each known block class a :class:`BlockKind`
names the shortcut submodule, the activation after the sum, and the *output* parameters of
the branch: setting those to zero makes the branch's output exactly zero (the last norm
layer's scale and shift in a ResNet block, the output projections in a ViT block). Removing
a block (Veit et al., 2016) is therefore the same computation whether it is done

- in place, by zeroing the output parameters (``--reset remove`` while measuring: the
  cached engine recomputes only what follows the block), or
- structurally, by replacing the block with :class:`RemovedBlock` (``act(shortcut(x))``),
  which is what ``layercrit compress`` saves: a smaller, faster network.

Other block classes can be registered with :func:`register_block`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import LayercritError
from .layers import Layer


@dataclass(frozen=True)
class BlockKind:
    shortcut: str | None  # attribute holding the shortcut path (None or a None attribute: identity)
    act: str | None  # attribute applied after the residual sum, kept when the branch is removed
    outputs: tuple[str, ...]  # parameters whose zeroing makes every residual branch output exactly 0


_BLOCK_KINDS: dict[type[nn.Module], BlockKind] = {}


def register_block(cls: type[nn.Module], *, shortcut: str | None, act: str | None, outputs: tuple[str, ...]) -> None:
    """Teach block discovery (``--unit block``) a residual block class."""
    _BLOCK_KINDS[cls] = BlockKind(shortcut, act, tuple(outputs))


def _register_known() -> None:
    from torchvision.models import resnet as tv

    register_block(tv.Bottleneck, shortcut="downsample", act="relu", outputs=("bn3.weight", "bn3.bias"))
    register_block(tv.BasicBlock, shortcut="downsample", act="relu", outputs=("bn2.weight", "bn2.bias"))
    try:
        from timm.models import resnet as tr
        from timm.models import vision_transformer as vit
    except ImportError:  # timm is a dependency; stay usable without it all the same
        return
    register_block(tr.Bottleneck, shortcut="downsample", act="act3", outputs=("bn3.weight", "bn3.bias"))
    register_block(tr.BasicBlock, shortcut="downsample", act="act2", outputs=("bn2.weight", "bn2.bias"))
    register_block(vit.Block, shortcut=None, act=None,
                   outputs=("attn.proj.weight", "attn.proj.bias", "mlp.fc2.weight", "mlp.fc2.bias"))


_register_known()


def block_kind(module: nn.Module) -> BlockKind | None:
    return _BLOCK_KINDS.get(type(module))


def branch_parameters(block: nn.Module, kind: BlockKind) -> tuple[str, ...]:
    """Names (relative to the block) of the residual branch's parameters: all but the shortcut's."""
    skip = f"{kind.shortcut}." if kind.shortcut else None
    return tuple(n for n, _ in block.named_parameters() if not (skip and n.startswith(skip)))


def discover_blocks(network: nn.Module, input_size: int, *, patterns: list[str] | None = None,
                    in_channels: int = 3) -> list[Layer]:
    """Residual blocks of known kinds, in forward-execution order, as measurement units.

    A block unit resets its residual branch (``params``); ``remove`` lists the parameters whose
    zeroing removes the branch. Blocks nested in blocks are not units of their own.
    """
    from .layers import _forward_order, _select

    candidates = {m: name for name, m in network.named_modules() if block_kind(m) is not None}
    if not candidates:
        known = ", ".join(sorted(f"{c.__module__}.{c.__name__}" for c in _BLOCK_KINDS))
        raise LayercritError(f"{type(network).__name__} has no residual block that --unit block knows "
                             f"({known}): measure layers instead, or register the class with "
                             "layercrit.resets.register_block")
    order = _forward_order(network, list(candidates), input_size, in_channels)
    names = [(candidates[m], "block") for m in order]
    names = [(n, k) for n, k in names if not any(n.startswith(o + ".") for o, _ in names)]
    names = _select(names, patterns or [])
    units = []
    for i, (name, _) in enumerate(names):
        block = network.get_submodule(name)
        kind = block_kind(block)
        own = dict(block.named_parameters())
        units.append(Layer(i, name, "block", type(block).__name__, params=branch_parameters(block, kind),
                           remove=tuple(p for p in kind.outputs if p in own)))
    return units


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

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.act(getattr(self, self.shortcut_name)(x))


def removed(block: nn.Module) -> RemovedBlock:
    kind = block_kind(block)
    if kind is None:
        raise LayercritError(f"{type(block).__name__} is not a residual block layercrit knows how to remove")
    shortcut = getattr(block, kind.shortcut, None) if kind.shortcut else None
    act = getattr(block, kind.act, None) if kind.act else None
    if getattr(act, "inplace", False):  # in place on the shortcut's input would corrupt the previous block's
        act = copy.copy(act)            # output, which autograd still needs when fine-tuning
        act.inplace = False
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


def block_magnitude(network: nn.Module, block: Layer) -> float:
    """The weight-magnitude rule's score: root mean square of the branch's output parameters.

    A branch whose output scale (last norm layer, output projections) is small adds little to
    the shortcut, so the magnitude rule removes the blocks with the smallest score first.
    """
    module = network.get_submodule(block.name)
    values = torch.cat([module.get_parameter(p).detach().flatten().double() for p in block.remove])
    return float(values.pow(2).mean().sqrt())

