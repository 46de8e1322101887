"""The method registry: a :class:`Recipe` per training method (defaults + the phases it runs).

A leaf module: recipe modules (``standard``, ``improved``, ``adversarial``, ``simclr``) import it
and register themselves; the package's ``__init__`` imports them, so looking a method up needs
nothing more than ``import layercrit.train``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import LayercritError
from .config import TrainConfig
from .config import make_config as _make_config


@dataclass
class Recipe:
    name: str
    summary: str
    phases: list[Any]                # phase objects (layercrit.train.phases), run in order
    defaults: dict = field(default_factory=dict)
    adversarial: bool = False        # evaluated by robust accuracy too
    validate: Callable[[TrainConfig], None] | None = None

    def config(self, **overrides) -> TrainConfig:
        return _make_config(self.name, self.defaults, self.validate, **overrides)


METHODS: dict[str, Recipe] = {}


def register_method(name: str, recipe: Recipe | None = None, **metadata: Any) -> Any:
    """Register a training method under ``name``: a call with its :class:`Recipe`,
    ``register_method("standard", Recipe(...))``, or, with the recipe's fields as keywords, a decorator above
    the function that validates its config (``@register_method("mine", summary=..., phases=[...])``)."""
    if recipe is not None:
        if metadata:
            raise TypeError("register_method: give a Recipe or its fields as keywords, not both")
        if recipe.name != name:
            raise ValueError(f"register_method('{name}'): the recipe is named '{recipe.name}'")
        METHODS[name] = recipe
        return recipe

    def decorator(validate: Callable[[TrainConfig], None]) -> Callable[[TrainConfig], None]:
        METHODS[name] = Recipe(name, validate=validate, **metadata)
        return validate

    return decorator


def register(recipe: Recipe) -> Recipe:
    """``register_method(recipe.name, recipe)`` (the recipe modules' older spelling)."""
    return register_method(recipe.name, recipe)


def get_recipe(method: str) -> Recipe:
    if method not in METHODS:
        raise LayercritError(f"unknown training method '{method}': use one of {', '.join(list_methods())}")
    return METHODS[method]


def list_methods() -> list[str]:
    return list(METHODS)


def make_config(method: str, **overrides) -> TrainConfig:
    """The recipe's defaults, then ``overrides``; unknown names and bad values are LayercritErrors."""
    return get_recipe(method).config(**overrides)
