"""Resets: which units (layers, residual blocks) and what they are reset to (strategies)."""
from .blocks import RemovedBlock, block_magnitude, discover_blocks, register_block, remove_blocks
from .layers import DEFAULT_TYPES, LAYER_TYPES, Layer, discover_layers
from .strategies import (InitReset, InterpolateReset, RandomReset, RemoveReset, Reset, ZeroReset, layer_reset, parse_reset,
                         reset_seed)

__all__ = ["RemoveReset", "RemovedBlock", "block_magnitude", "discover_blocks", "register_block", "remove_blocks",
           "DEFAULT_TYPES", "LAYER_TYPES", "InitReset", "InterpolateReset", "Layer", "RandomReset", "Reset",
           "ZeroReset", "discover_layers", "layer_reset", "parse_reset", "reset_seed"]
