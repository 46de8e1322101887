"""The reset-kind registry: one class per kind (``random``, ``zero``, ``noise``, ...), registered by name.

A kind's class does everything a kind needs, in one place: :meth:`Reset.parse` reads and checks its
spec (``<kind>`` or ``<kind>:<arg>``; the instance's ``name`` is the canonical spec), ``stochastic``
says whether trials differ (else trial 0 only), :meth:`Reset.prepare` builds its state for one model,
:meth:`Reset.values` gives a unit's new parameters, and :meth:`Reset.portable` is the unprepared copy
that travels to Ray workers (which prepare it for their own copy of the model).

Importing this module (and the kinds) does not import PyTorch: the command line lists the kinds in
its help and checks specs before anything heavy loads, so kinds import torch inside their methods.
A new kind is one module in this folder: ``layercrit.resets.kinds`` imports every module here.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ... import validate
from ...errors import ConfigError

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from ..layers import Unit


@dataclass(frozen=True)
class ResetContext:
    """What a reset builds its state from: the model being measured."""

    factory: Callable[[], nn.Module] | None  # builds a freshly initialized instance of its architecture
    network: nn.Module  # the trained network (unwrapped)
    seed: int  # the measurement's seed
    trust_pickle: bool = False  # checkpoints (init:) may need arbitrary unpickling

    def fresh_factory(self, reset: str) -> Callable[[], nn.Module]:
        """The factory of fresh instances; a ConfigError naming ``factory`` where there is none."""
        if self.factory is None:
            raise ConfigError(f"reset {reset} draws fresh weights from a new instance of the architecture, and "
                              "none was given: pass {factory} (a function that builds one, e.g. factory=MyNet or "
                              "factory=lambda: MyNet(num_classes=10)), or measure reset='zero' or "
                              "reset='init:<checkpoint>' (they need none)", ("factory",))
        return self.factory

    def any_factory(self) -> Callable[[], nn.Module]:
        """Builds a network of the architecture: the factory, else a copy of the trained network (for resets
        that overwrite what they use, e.g. init: loads a checkpoint into it)."""
        if self.factory is not None:
            return self.factory
        network = self.network
        return lambda: copy.deepcopy(network)


class Reset:
    """Base class of reset kinds. Subclasses set the class attributes (``register_reset`` sets ``kind``,
    ``usage`` and ``summary``) and implement :meth:`values`; those with an argument override :meth:`parse`."""

    kind: ClassVar[str] = ""  # the registry key: <kind> or <kind>:<arg>
    usage: ClassVar[str] = ""  # how it is written, for help and messages: "noise:<sigma>"
    summary: ClassVar[str] = ""  # one line for the help; {field} placeholders name options
    blocks_only: ClassVar[bool] = False  # applies to residual blocks only (unit = "block")
    stochastic: bool = False  # do trials differ? (deterministic resets are measured at trial 0 only)
    needs_factory: bool = False  # draws from a fresh instance of the architecture
    name: str  # the canonical spec, e.g. "interpolate:0.5"

    def __init__(self) -> None:
        self.name = self.kind

    @classmethod
    def parse(cls, arg: str | None, spec: str) -> Reset | None:
        """The reset ``spec`` means (``arg``: what follows ``<kind>:``, None without a colon); None where
        ``spec`` is no form of this kind; a ConfigError (field ``reset``) for a form with a bad value."""
        return cls() if arg is None else None

    def prepare(self, context: ResetContext) -> Reset:
        """Build what :meth:`values` needs for one model (fresh instances, checkpoints); returns self."""
        return self

    def files(self) -> list[str]:
        """Files whose contents decide this reset's values beyond its name (a checkpoint): a run records their
        sha256, so a resume with another file under the same name is refused."""
        return []

    def values(self, network: nn.Module, unit: Unit | str, trial: int) -> dict[str, torch.Tensor]:
        """The unit's new parameters by name (relative to the unit's module); the network is not changed."""
        raise NotImplementedError

    def portable(self) -> Reset:
        """An unprepared copy that another process (a Ray worker) prepares for its own model; same name."""
        out = parse_reset(self.name)
        out.name = self.name
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


_KINDS: dict[str, type[Reset]] = {}
R = TypeVar("R", bound=type[Reset])


def register_reset(name: str, cls: R | None = None, *, usage: str | None = None, summary: str = "") -> Any:
    """Register ``cls`` as reset kind ``name``: a call, ``register_reset("noise", NoiseReset, usage=...)``,
    or a decorator, ``@register_reset("noise", usage="noise:<sigma>", summary=...)`` above the class."""
    validate.text(name, "name")

    def decorator(kind_cls: R) -> R:
        if not (isinstance(kind_cls, type) and issubclass(kind_cls, Reset)):
            raise TypeError(f"register_reset('{name}'): {kind_cls!r} is not a subclass of Reset")
        kind_cls.kind, kind_cls.usage, kind_cls.summary = name, usage or name, summary
        _KINDS[name] = kind_cls
        return kind_cls

    return decorator(cls) if cls is not None else decorator


def get_reset_kind(name: str) -> type[Reset] | None:
    return _KINDS.get(name)


def list_reset_kinds() -> list[str]:
    return list(_KINDS)


def reset_usage() -> str:
    """The registered kinds as written, for messages: "random, zero, ... or noise:<sigma>"."""
    usages = [k.usage for k in _KINDS.values()]
    return ", ".join(usages[:-1]) + f" or {usages[-1]}" if len(usages) > 1 else "".join(usages)


def parse_reset(spec: Any) -> Reset:
    """The unprepared reset of a spec (``random``, ``interpolate:0.5``, ...); a ConfigError (field
    ``reset``) names a bad one. Nothing is loaded: :meth:`Reset.prepare` does that."""
    try:
        spec = validate.text(spec, "{reset}")
    except ConfigError:
        raise
    except Exception as e:  # validate's LayercritError: the same text, as a ConfigError of the field
        raise ConfigError(str(e), ("reset",)) from None
    kind, colon, arg = spec.partition(":")
    cls = _KINDS.get(kind)
    reset = cls.parse(arg if colon else None, spec) if cls is not None else None
    if reset is None:
        raise ConfigError(f"unknown reset {validate.show(spec)}: use one of {reset_usage()}", ("reset",))
    return reset


def reset_names(specs: Any) -> tuple[str, ...]:
    """Reset specs in canonical form, duplicates dropped (the first kept), at least one."""
    if isinstance(specs, str):
        specs = [specs]
    if not isinstance(specs, (list, tuple)):
        raise ConfigError(f"{{reset}} {validate.show(specs)}: give a list of resets ({reset_usage()})", ("reset",))
    if not specs:
        raise ConfigError(f"{{reset}}: no reset given: use one of {reset_usage()}", ("reset",))
    return tuple(dict.fromkeys(parse_reset(s).name for s in specs))


def params_of(network: nn.Module, unit: Unit | str) -> dict[str, torch.Tensor]:
    """The parameters a reset of ``unit`` changes, by name relative to the unit's module (a module name
    means a layer unit: its own parameters)."""
    module = network.get_submodule(unit_name(unit))
    names: Sequence[str] = (tuple(n for n, _ in module.named_parameters(recurse=False)) if isinstance(unit, str)
                            else unit.parameter_names(module))
    return {n: module.get_parameter(n) for n in names}


def unit_name(unit: Unit | str) -> str:
    return unit if isinstance(unit, str) else unit.name
