"""Checking create_model's options: shared by the factory and ``ModelBundle.from_module``."""
from __future__ import annotations

from typing import Any

from .. import validate
from ..errors import ConfigError
from .registry import AUTO

# How a normalization choice is asked for, from Python (the command line names its flags instead)
NORMALIZE_PY = "normalize=(mean, std) or normalize=None"


def validate_model_options(num_classes: Any, init_seed: Any, mean: Any, std: Any) -> dict[str, Any]:
    """The plain-value options of create_model, checked by the rules the CLI and study files use too
    (ConfigErrors name the parameters)."""
    return validate.model_options(num_classes_=num_classes, init_seed=init_seed, mean=mean, std=std)


def normalize_arg(normalize: Any, mean: Any, std: Any) -> tuple[Any, Any, bool]:
    """(mean, std, raw) from ``create_model``'s ``normalize``/``mean``/``std``."""
    if isinstance(normalize, str) and normalize == AUTO:
        return mean, std, False
    if mean is not None or std is not None:
        raise ConfigError("give {normalize} or {mean}/{std}, not both", ("normalize", "mean", "std"))
    if normalize is None:
        return None, None, True
    if isinstance(normalize, (tuple, list)) and len(normalize) == 2:
        return normalize[0], normalize[1], False
    raise ConfigError(f"{{normalize}} {normalize!r}: give (mean, std), e.g. ((0.485, 0.456, 0.406), "
                      "(0.229, 0.224, 0.225)), or None for raw [0, 1] input", ("normalize",))


def no_known_normalization(what: str) -> ConfigError:
    """The error for a model whose input normalization nobody chose and nothing records."""
    return ConfigError(f"{what} has no known input normalization: give {{normalize}} (the mean/std its weights "
                       "were trained with; none for a model that normalizes its input itself or takes raw [0, 1] "
                       "images); measuring without the right normalization measures a broken model",
                       ("normalize",), python={"normalize": NORMALIZE_PY})
