"""The study's model zoo: 51 ImageNet ResNet-50s by name (``--model zoo:<id>``).

``registry`` is pure data (no torch); ``layouts`` converts checkpoint files to state dicts,
``fetch`` downloads them into the cache, ``load`` builds the network. Torch-side names are
imported lazily so that ``from layercrit.zoo import zoo_metadata`` stays light.
"""
from .registry import (CATEGORIES, Source, ZooModel, get_zoo_model, list_zoo_models, register_zoo_model,
                       zoo_metadata)

_LAZY = {"register_layout": "layouts", "get_layout": "layouts", "fetch_model": "fetch", "cache_dir": "fetch",
         "load_zoo_network": "load"}

__all__ = ["CATEGORIES", "Source", "ZooModel", "get_zoo_model", "list_zoo_models", "register_zoo_model",
           "zoo_metadata", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
