"""Training-method lab: train one architecture on CIFAR-10 with different methods, everything else fixed.

``train(method, data, out, **hyperparameters)`` runs one recipe (see ``list_methods()``) and writes
``init.safetensors``, ``model.safetensors`` and ``run.json`` into ``out``; see docs/training.md.
"""
from .adversarial import pgd
from .loop import INIT_FILE, MODEL_FILE, SIDECAR_FILE, read_sidecar, train
from .recipes import HYPERPARAMETERS, METHODS, TrainConfig, get_recipe, list_methods, make_config, parse_eps

__all__ = ["HYPERPARAMETERS", "INIT_FILE", "METHODS", "MODEL_FILE", "SIDECAR_FILE", "TrainConfig", "get_recipe",
           "list_methods", "make_config", "parse_eps", "pgd", "read_sidecar", "train"]
