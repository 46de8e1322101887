"""Reset kinds: the registry (base.py) and every kind in this folder, each module registering its own.

Every module here is imported with the package, so a new kind is one new file (see noise.py).
"""
import importlib
import pkgutil

from .base import (Reset, ResetContext, get_reset_kind, list_reset_kinds, params_of, parse_reset, register_reset,
                   reset_names, reset_usage)
from .builtin import InitReset, InterpolateReset, RandomReset, RemoveReset, ZeroReset, reset_seed

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["InitReset", "InterpolateReset", "RandomReset", "RemoveReset", "Reset", "ResetContext", "ZeroReset",
           "get_reset_kind", "list_reset_kinds", "params_of", "parse_reset", "register_reset", "reset_names",
           "reset_seed", "reset_usage"]
