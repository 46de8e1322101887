"""layercrit: which layers of a trained vision model does its decision depend on?

Pipeline: models (create_model) -> data (load_data) -> resets -> engine (measure)
-> store (ResultStore, export). The CLI (``layercrit``) is a thin layer over this API.

The names below are imported on first use (PEP 562), so ``import layercrit`` (and the CLI's
start, which must answer Ctrl-C with one line at any moment) does not import PyTorch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

from . import zoo as _zoo  # noqa: E402, F401  (registers the zoo: model spec kind; torch-free)
from .errors import LayercritError  # noqa: E402

_LAZY = {
    "EvalData": "data", "load_data": "data", "measure": "engine", "ModelBundle": "models",
    "create_model": "models", "list_archs": "models", "register_arch": "models", "discover_layers": "resets",
    "ResultStore": "store", "export": "store", "MeasureConfig": "engine", "measure_models": "engine",
    "ModelSource": "models",
}
_SUBMODULES = ("plot",)  # ``lc.plot``: imported (with matplotlib) on first use, left out of ``import *``

__all__ = ["EvalData", "LayercritError", "MeasureConfig", "ModelBundle", "ModelSource", "ResultStore", "create_model",
           "discover_layers", "export", "list_archs", "load_data", "measure", "measure_models", "register_arch",
           "__version__"]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)  # the import binds it as an attribute too
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'layercrit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
