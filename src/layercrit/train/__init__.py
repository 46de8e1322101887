"""Training-method lab: train one architecture on CIFAR-10 with different methods, everything else fixed.

``train(method, data, out, **hyperparameters)`` runs one recipe (see ``list_methods()``) and writes
``init.safetensors``, ``model.safetensors`` and ``run.json`` into ``out``; see docs/training.md.

Layout: ``config`` (TrainConfig) -> ``registry`` (method name -> Recipe) -> ``phases`` (supervised,
contrastive, probe: each runs its own epochs) -> ``run`` (the lifecycle: resume, snapshots,
evaluation, sidecar). The recipe modules below register themselves, in this order.
"""
from ..accuracy import pgd
# isort: off  (each registers its recipes; this order is the order of list_methods())
from . import standard, improved, adversarial, simclr  # noqa: F401
# isort: on
from .config import HYPERPARAMETERS, TrainConfig, parse_eps
from .registry import METHODS, Recipe, get_recipe, list_methods, make_config
from .run import INIT_FILE, MODEL_FILE, SIDECAR_FILE, missing_weights, read_sidecar, snapshot_file, train

__all__ = ["HYPERPARAMETERS", "INIT_FILE", "METHODS", "MODEL_FILE", "Recipe", "SIDECAR_FILE", "TrainConfig",
           "get_recipe", "list_methods", "make_config", "missing_weights", "parse_eps", "pgd", "read_sidecar",
           "snapshot_file", "train"]
