"""A model ready for measurement (:class:`ModelBundle`) and where it came from (:class:`ModelSource`)."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn

from .checkpoint import weights_checksum
from .wrapper import NormalizedModel


@dataclass(frozen=True)
class ModelOptions:
    """The keyword arguments of :func:`layercrit.create_model` besides the spec."""

    arch: str | None = None
    num_classes: int | None = None
    init_seed: int = 0
    name: str | None = None
    trust_pickle: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    checkpoint: str | None = None
    category: str | None = None


@dataclass(frozen=True)
class ModelSource:
    """How to build a model again: ``create_model(spec, **options)``, e.g. on another machine."""

    spec: str
    options: ModelOptions = field(default_factory=ModelOptions)

    def portable(self) -> ModelSource:
        """The same source with relative file paths (``file:`` specs, ``checkpoint=``) made absolute,
        as this process sees them: other processes may run in other folders."""
        kind, _, rest = self.spec.partition(":")
        spec = f"file:{_absolute(rest)}" if kind == "file" else self.spec
        checkpoint = self.options.checkpoint
        if checkpoint:
            checkpoint = ",".join(_absolute(p) for p in checkpoint.split(","))
        return ModelSource(spec, dataclasses.replace(self.options, checkpoint=checkpoint))


def _absolute(path: str) -> str:
    return os.path.abspath(path) if path and os.path.exists(path) else path


@dataclass
class ModelBundle:
    """A model ready for measurement, plus how to build fresh instances of its architecture."""

    model: NormalizedModel  # trained network inside its normalization wrapper, eval mode
    factory: Callable[[], nn.Module]  # builds a freshly initialized (unwrapped) network; uses torch's RNG
    spec: str  # what the model is, as recorded in the results database
    arch: str
    num_classes: int | None  # None where unknown (a module given directly)
    input_size: int | None  # likewise
    model_id: str
    category: str | None = None  # e.g. the zoo registry's category; None where unknown
    source: ModelSource | None = None  # how to build it again; None: this object is the only copy

    @property
    def network(self) -> nn.Module:
        return self.model.model

    def checksum(self) -> str:
        return weights_checksum(self.network)

    @classmethod
    def from_module(cls, module: nn.Module, factory: Callable[[], nn.Module], *, model_id: str | None = None,
                    category: str | None = None) -> ModelBundle:
        """Wrap any classifier; ``factory`` builds a freshly initialized instance of its architecture
        (what a random reset draws from). A :class:`NormalizedModel` keeps its normalization; any other
        module is fed [0, 1] images as they are."""
        wrapped = module if isinstance(module, NormalizedModel) else NormalizedModel(module, None, None)
        cls_ = type(wrapped.model)
        return cls(wrapped.eval(), factory, f"{cls_.__module__}.{cls_.__qualname__}", cls_.__name__, None, None,
                   model_id or cls_.__name__, category)
