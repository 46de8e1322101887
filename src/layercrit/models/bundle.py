"""A model ready for measurement (:class:`ModelBundle`) and where it came from (:class:`ModelSource`)."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn

from ..errors import ConfigError
from .checkpoint import weights_checksum
from .options import no_known_normalization, normalize_arg, validate_model_options
from .user_arch import is_user_arch
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
    normalize: Any = "auto"  # None: --normalize none (raw input); "auto": mean/std if given, else the model's own
    key_map: str | tuple[str, ...] | None = None  # file: checkpoints named otherwise: "auto", files, rules (keymap.py)


@dataclass(frozen=True)
class ModelSource:
    """How to build a model again: ``create_model(spec, **options)``, e.g. on another machine (a Ray worker).

    :func:`layercrit.create_model` sets it as ``bundle.source``; :func:`layercrit.measure` also takes one as its
    model (built there, or on the executor's workers).

    Args:
        spec: the model spec, e.g. ``"arch:cifar_resnet50"`` or ``"file:w.safetensors"``.
        options: the other keyword arguments of ``create_model`` (:class:`ModelOptions`).

    Examples:
        >>> import layercrit as lc
        >>> from layercrit.models import ModelOptions
        >>> source = lc.ModelSource("arch:cifar_resnet50", ModelOptions(name="untrained"))
        >>> lc.create_model("arch:cifar_resnet50", name="untrained").source == source
        True
    """

    spec: str
    options: ModelOptions = field(default_factory=ModelOptions)

    def portable(self) -> ModelSource:
        """The same source with relative file paths (``file:`` specs, ``checkpoint=``) made absolute,
        as this process sees them: other processes may run in other folders."""
        kind, _, rest = self.spec.partition(":")
        spec = f"file:{_absolute(rest)}" if kind == "file" else f"arch:{_absolute_code(rest)}" if kind == "arch" \
            else self.spec
        checkpoint = self.options.checkpoint
        if checkpoint:
            checkpoint = ",".join(_absolute(p) for p in checkpoint.split(","))
        arch = _absolute_code(self.options.arch) if self.options.arch else self.options.arch
        key_map = self.options.key_map
        if key_map is not None:  # its files (rules stay as they are: _absolute only touches existing paths)
            files = [key_map] if isinstance(key_map, str) else list(key_map)
            files = [k if k == "auto" else _absolute(k) for k in files]
            key_map = files[0] if isinstance(key_map, str) else tuple(files)
        return ModelSource(spec, dataclasses.replace(self.options, checkpoint=checkpoint, arch=arch, key_map=key_map))


def _absolute(path: str) -> str:
    return os.path.abspath(path) if path and os.path.exists(path) else path


def _absolute_code(arch: str) -> str:
    """``path/to/file.py:callable`` with the file's path made absolute (other architecture names as they are)."""
    base, mark, removed = arch.partition(":remove=")
    if not is_user_arch(base):
        return arch
    where, _, attr = base.rpartition(":")
    return f"{_absolute(where) if where.endswith('.py') else where}:{attr}{mark}{removed}"


@dataclass
class ModelBundle:
    """A model ready for measurement, plus how to build fresh instances of its architecture.

    Made by :func:`layercrit.create_model` (from a spec) or :meth:`from_module` (from a module in memory);
    :func:`layercrit.measure` takes either.

    Args:
        model: the trained network inside its normalization wrapper (:class:`NormalizedModel`), eval mode.
        factory: builds a freshly initialized (unwrapped) network of the same architecture, what ``random``
            resets draw from; None where unknown (then only ``zero``, ``init:`` and ``interpolate:<alpha>:<file>``
            resets can be measured).
        spec: what the model is, as recorded in a results database.
        arch: its architecture's name.
        num_classes: its class count (None where unknown: a module given directly).
        input_size: the resolution it takes (None where unknown).
        model_id: its name in a results database.
        category: its category there (e.g. the zoo's), or None.
        source: how to build it again (:class:`ModelSource`); None: this object is the only copy.
        arch_code: an architecture from the user's code: its file, callable and sha256.
        key_map: how a ``file:`` checkpoint's names were mapped to the architecture's.

    Examples:
        >>> import torch.nn as nn
        >>> import layercrit as lc
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
        >>> bundle = lc.ModelBundle.from_module(net, normalize=None, model_id="tiny", category="demo")
        >>> bundle.model_id, bundle.network is net
        ('tiny', True)
    """

    model: NormalizedModel  # trained network inside its normalization wrapper, eval mode
    factory: Callable[[], nn.Module] | None  # builds a freshly initialized (unwrapped) network; uses torch's RNG
    # (None: unknown, for a module given directly: resets that draw fresh weights are refused)
    spec: str  # what the model is, as recorded in the results database
    arch: str
    num_classes: int | None  # None where unknown (a module given directly)
    input_size: int | None  # likewise
    model_id: str
    category: str | None = None  # e.g. the zoo registry's category; None where unknown
    source: ModelSource | None = None  # how to build it again; None: this object is the only copy
    arch_code: dict[str, str] | None = None  # an architecture from the user's code: file, callable, sha256
    key_map: dict[str, Any] | None = None  # how a file: checkpoint's names were mapped (KeyMapping.record())

    @property
    def network(self) -> nn.Module:
        return self.model.model

    def checksum(self) -> str:
        return weights_checksum(self.network)

    @classmethod
    def from_module(cls, module: nn.Module, factory: Callable[[], nn.Module] | None = None, *,
                    normalize: Any = "auto", model_id: str | None = None, category: str | None = None) -> ModelBundle:
        """Wrap any classifier, naming it in the results.

        Args:
            module: the trained network (or a :class:`NormalizedModel`, which keeps its own normalization).
            factory: builds a freshly initialized instance of its architecture (what ``random`` and
                ``interpolate`` resets draw from; without it only ``zero``, ``init:`` and
                ``interpolate:<alpha>:<checkpoint>`` resets can be measured).
            normalize: ``(mean, std)``, or ``None`` for a module that takes [0, 1] images as they are (it
                normalizes itself, or was trained on raw input). Required for a plain module: measuring it with
                the wrong input normalization would measure a broken model.
            model_id: its name in the results (default: the class name).
            category: its category there (default: none).

        Returns:
            The :class:`ModelBundle`, in eval mode.

        Examples:
            >>> import torch.nn as nn
            >>> net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
            >>> ModelBundle.from_module(net, normalize=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))).model_id
            'Sequential'
        """
        if isinstance(module, NormalizedModel):
            if not (isinstance(normalize, str) and normalize == "auto"):
                raise ConfigError("{normalize} applies to a plain module: this NormalizedModel has its own",
                                  ("normalize",))
            wrapped = module
        elif isinstance(normalize, str) and normalize == "auto":
            raise no_known_normalization(f"the module {type(module).__name__}")
        else:
            mean, std, _ = normalize_arg(normalize, None, None)
            checked = validate_model_options(None, 0, mean, std)
            if checked["mean"] is None and normalize is not None:
                raise ConfigError(f"{{normalize}} {normalize!r}: give (mean, std) or None", ("normalize",))
            wrapped = NormalizedModel(module, checked["mean"], checked["std"])
        if factory is not None and not callable(factory):
            raise ConfigError(f"{{factory}} must be a function that builds a fresh instance of the architecture, "
                              f"got {type(factory).__name__}", ("factory",))
        cls_ = type(wrapped.model)
        return cls(wrapped.eval(), factory, f"{cls_.__module__}.{cls_.__qualname__}", cls_.__name__, None, None,
                   model_id or cls_.__name__, category)
