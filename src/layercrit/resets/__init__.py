"""Resets: which units (layers, residual blocks) and what they are reset to (the kinds in ``resets.kinds``).

The names below are imported on first use (PEP 562): ``layercrit.resets.kinds`` (the reset-kind registry)
is importable without PyTorch, so the command line lists and checks reset kinds before loading it.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..models.state import parameters_set as layer_reset
    from .blocks import block_magnitude, discover_blocks
    from .kinds import (InitReset, InterpolateReset, RandomReset, RemoveReset, Reset, ResetContext, ZeroReset,
                        list_reset_kinds, parse_reset, register_reset, reset_names, reset_seed, reset_usage)
    from .layers import DEFAULT_TYPES, LAYER_TYPES, Unit, discover_layers

_LAZY = {"block_magnitude": ".blocks", "discover_blocks": ".blocks", "DEFAULT_TYPES": ".layers",
         "LAYER_TYPES": ".layers", "Unit": ".layers", "discover_layers": ".layers",
         **dict.fromkeys(["InitReset", "InterpolateReset", "RandomReset", "RemoveReset", "Reset", "ResetContext",
                          "ZeroReset", "list_reset_kinds", "parse_reset", "register_reset", "reset_names",
                          "reset_seed", "reset_usage"], ".kinds")}

__all__ = ["DEFAULT_TYPES", "LAYER_TYPES", "InitReset", "InterpolateReset", "RandomReset", "RemoveReset", "Reset",
           "ResetContext", "Unit", "ZeroReset", "block_magnitude", "discover_blocks", "discover_layers",
           "layer_reset", "list_reset_kinds", "parse_reset", "register_reset", "reset_names", "reset_seed",
           "reset_usage"]


def __getattr__(name: str) -> Any:
    if name == "layer_reset":  # the old name of models.state.parameters_set
        from ..models.state import parameters_set

        return parameters_set
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value
