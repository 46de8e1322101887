"""Resets: which units (layers, residual blocks) and what they are reset to (strategies)."""
from .blocks import block_magnitude, discover_blocks
from .layers import DEFAULT_TYPES, LAYER_TYPES, Unit, discover_layers
from .strategies import (RESET_KINDS, InitReset, InterpolateReset, RandomReset, RemoveReset, Reset, ZeroReset,
                         check_reset, layer_reset, parse_reset, reset_seed)

__all__ = ["DEFAULT_TYPES", "LAYER_TYPES", "RESET_KINDS", "InitReset", "InterpolateReset", "RandomReset", "RemoveReset",
           "Reset", "Unit", "ZeroReset", "block_magnitude", "check_reset", "discover_blocks", "discover_layers",
           "layer_reset", "parse_reset", "reset_seed"]
