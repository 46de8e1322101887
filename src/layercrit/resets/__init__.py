"""Resets: which layers (discovery and selection) and what they are reset to (strategies)."""
from .layers import DEFAULT_TYPES, LAYER_TYPES, Layer, discover_layers
from .strategies import (InitReset, InterpolateReset, RandomReset, Reset, ZeroReset, layer_reset, parse_reset,
                         reset_seed)

__all__ = ["DEFAULT_TYPES", "LAYER_TYPES", "InitReset", "InterpolateReset", "Layer", "RandomReset", "Reset",
           "ZeroReset", "discover_layers", "layer_reset", "parse_reset", "reset_seed"]
