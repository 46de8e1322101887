"""Model spec kinds: the table from ``<kind>:<rest>`` to the function that builds the model.

A leaf module (no torch, no layercrit subpackage): :mod:`layercrit.models.factory` registers
``arch``, ``file``, ``timm`` and ``torchvision``; plug-ins register their own kinds here (the zoo
registers ``zoo`` when ``layercrit`` is imported), so :func:`layercrit.create_model` imports none of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # types only: this table must stay importable without torch
    from .models import ModelBundle, ModelOptions

# create(rest, spec, options): the bundle for spec "<kind>:<rest>" (its source is set by create_model)
Create = Callable[[str, str, "ModelOptions"], "ModelBundle"]


@dataclass(frozen=True)
class SpecKind:
    name: str
    create: Create
    usage: str  # how the kind is written, for messages: "zoo:<id>"
    takes_checkpoint: bool = False  # whether create_model(..., checkpoint=) applies


_KINDS: dict[str, SpecKind] = {}


def register_spec_kind(name: str, create: Create | None = None, *, usage: str, takes_checkpoint: bool = False) -> Any:
    """Make ``<name>:<rest>`` a model spec built by ``create(rest, spec, options)``: a call,
    ``register_spec_kind("zoo", create, usage="zoo:<id>")``, or a decorator above the function. ``usage``: how
    the kind is written, for messages (``{field}`` placeholders name options: ``file:<path> with {arch}``)."""

    def decorator(fn: Create) -> Create:
        _KINDS[name] = SpecKind(name, fn, usage, takes_checkpoint)
        return fn

    return decorator(create) if create is not None else decorator


def get_spec_kind(name: str) -> SpecKind | None:
    return _KINDS.get(name)


def list_spec_kinds() -> list[str]:
    return list(_KINDS)


def spec_usages(*, taking_checkpoint: bool = False) -> list[str]:
    """How each kind is written (only those that take ``checkpoint=``, with ``taking_checkpoint``)."""
    return [k.usage for k in _KINDS.values() if k.takes_checkpoint or not taking_checkpoint]
