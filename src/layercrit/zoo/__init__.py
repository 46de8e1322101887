"""The study's model zoo: 51 ImageNet ResNet-50s by name (``--model zoo:<id>``).

``registry`` is pure data (no torch); ``layouts`` converts checkpoint files to state dicts,
``fetch`` downloads them into the cache, ``load`` builds the network. Importing this package
(``import layercrit`` does) registers the ``zoo:`` model spec kind in :mod:`layercrit.model_specs`;
it stays torch-free: the torch-side names below are imported on first use.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..model_specs import register_spec_kind
from .registry import (CATEGORIES, Source, ZooModel, get_zoo_model, list_zoo_models, register_zoo_model,
                       zoo_metadata)

if TYPE_CHECKING:
    from ..models import ModelBundle, ModelOptions

_LAZY = {"register_layout": "layouts", "get_layout": "layouts", "fetch_model": "fetch", "cache_dir": "fetch",
         "load_zoo_network": "load", "create_zoo_bundle": "load"}

__all__ = ["CATEGORIES", "Source", "ZooModel", "cache_dir", "create_zoo_bundle", "fetch_model", "get_layout",
           "get_zoo_model", "list_zoo_models", "load_zoo_network", "register_layout", "register_zoo_model",
           "zoo_metadata"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _create(model_id: str, spec: str, options: ModelOptions) -> ModelBundle:
    # torch-side, so imported here: `import layercrit` (and the CLI's start) must not import torch
    from .load import create_zoo_bundle

    return create_zoo_bundle(model_id, spec, options)


register_spec_kind("zoo", _create, usage="zoo:<id>", takes_checkpoint=True)
