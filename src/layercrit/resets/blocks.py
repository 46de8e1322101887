"""Residual blocks as measurement units: discovery and the weight-magnitude score.

What a block is (its shortcut, its activation, the output parameters whose zeroing removes
its branch) and structural removal live with the models (:mod:`layercrit.models.blocks`);
here blocks become :class:`Unit` s that a reset changes as a whole (``--unit block``).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..models.blocks import block_kind, branch_parameters, known_block_classes
from .layers import Unit, forward_order, select


def discover_blocks(network: nn.Module, input_size: int, *, patterns: list[str] | None = None,
                    in_channels: int = 3) -> list[Unit]:
    """Residual blocks of known kinds, in forward-execution order, as measurement units.

    A block unit resets its residual branch (``params``); ``remove`` lists the parameters whose
    zeroing removes the branch. Blocks nested in blocks are not units of their own.
    """
    candidates = {m: name for name, m in network.named_modules() if block_kind(m) is not None}
    if not candidates:
        raise ConfigError(f"{type(network).__name__} has no residual block that {{unit}} block knows "
                          f"({', '.join(known_block_classes())}): measure layers instead, or register the class "
                          "with layercrit.models.register_block", ("unit",))
    order = forward_order(network, list(candidates), input_size, in_channels)
    names = [(candidates[m], "block") for m in order]
    names = [(n, k) for n, k in names if not any(n.startswith(o + ".") for o, _ in names)]
    position = {n: i for i, (n, _) in enumerate(names)}  # forward order among all blocks, kept by a selection
    names = select(names, patterns or [])
    units = []
    for name, _ in names:
        i = position[name]
        block = network.get_submodule(name)
        kind = block_kind(block)
        assert kind is not None  # every candidate has a kind
        own = dict(block.named_parameters())
        units.append(Unit(i, name, "block", type(block).__name__, params=branch_parameters(block, kind),
                          remove=tuple(p for p in kind.outputs if p in own)))
    return units


def block_magnitude(network: nn.Module, block: Unit) -> float:
    """The weight-magnitude rule's score: root mean square of the branch's output parameters.

    A branch whose output scale (last norm layer, output projections) is small adds little to
    the shortcut, so the magnitude rule removes the blocks with the smallest score first.
    """
    module = network.get_submodule(block.name)
    values = torch.cat([module.get_parameter(p).detach().flatten().double() for p in block.remove])
    return float(values.pow(2).mean().sqrt())
