"""Reset strategies: what a layer's parameters are replaced with.

- ``random``: re-randomization (the study). Trial t takes the layer's parameters from a fresh
  instance of the architecture built with a seed derived only from (seed, t), so a given
  (seed, trial, layer) draw is identical whatever else runs, in whatever order or process.
- ``zero``: all parameters of the layer set to 0 (deterministic).
- ``init:<checkpoint>``: re-initialization to the weights at the start of training (Zhang et al.).
- ``interpolate:<alpha>[:<checkpoint>]``: (1 - alpha) * trained + alpha * initial, where
  "initial" is the checkpoint if given, else the trial's random draw (Chatterji et al.).
- ``remove`` (block units only): the residual branch is removed; the block computes its
  shortcut (see blocks.py).

Only the unit's parameters change (a layer's own, a block's residual branch); buffers and
every other unit stay trained.
"""
from __future__ import annotations

import contextlib
import hashlib
from typing import Callable, Iterator

import torch
import torch.nn as nn

from ..errors import LayercritError
from ..models.checkpoint import load_into, load_state_dict
from ..models.factory import build_seeded
from .layers import Unit

RESET_KINDS = ("random", "zero", "init:<checkpoint>", "interpolate:<alpha>[:<checkpoint>]", "remove")


def reset_seed(seed: int, trial: int) -> int:
    """The RNG seed of trial ``trial``'s fresh instance.

    Hash-derived (63 bits) so that it never coincides with a small ``--init-seed`` used to
    build ``arch:`` models: a reset must never redraw the model's own initialization.
    """
    digest = hashlib.sha256(f"layercrit/reset/seed={seed}/trial={trial}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class Reset:
    """Base class. ``values(network, unit, trial)`` gives the unit's new parameters by name
    (relative to the unit's module)."""

    name: str
    stochastic: bool = False  # do trials differ?

    def values(self, network: nn.Module, unit: Unit | str, trial: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def _as_unit(unit: Unit | str) -> Unit:
    """A module name means a layer unit: its own parameters."""
    return Unit(-1, unit, "layer", "") if isinstance(unit, str) else unit


def _params_of(network: nn.Module, unit: Unit | str) -> dict[str, torch.Tensor]:
    unit = _as_unit(unit)
    module = network.get_submodule(unit.name)
    return {n: module.get_parameter(n) for n in unit.parameter_names(module)}


class RandomReset(Reset):
    stochastic = True

    def __init__(self, factory: Callable[[], nn.Module], seed: int):
        self.name, self.factory, self.seed = "random", factory, seed
        self._fresh: tuple[int, nn.Module] | None = None  # (trial, instance): one fresh instance at a time

    def fresh(self, trial: int) -> nn.Module:
        if self._fresh is None or self._fresh[0] != trial:
            self._fresh = trial, build_seeded(self.factory, reset_seed(self.seed, trial))
        return self._fresh[1]

    def values(self, network, unit, trial):
        return _params_of(self.fresh(trial), unit)


class ZeroReset(Reset):
    name = "zero"

    def values(self, network, unit, trial):
        return {k: torch.zeros_like(p) for k, p in _params_of(network, unit).items()}


class RemoveReset(Reset):
    """The block's residual branch removed: its output parameters zeroed, so the block computes
    exactly its shortcut (``RemovedBlock``)."""

    name = "remove"

    def values(self, network, unit, trial):
        unit = _as_unit(unit)
        if not unit.remove:
            raise LayercritError(f"--reset remove applies to residual blocks (--unit block), not to layer {unit.name}")
        module = network.get_submodule(unit.name)
        return {k: torch.zeros_like(module.get_parameter(k)) for k in unit.remove}


class InitReset(Reset):
    def __init__(self, name: str, initial: nn.Module):
        self.name, self.initial = name, initial

    def values(self, network, unit, trial):
        return _params_of(self.initial, unit)


class InterpolateReset(Reset):
    def __init__(self, name: str, alpha: float, target: Reset):
        self.name, self.alpha, self.target = name, alpha, target
        self.stochastic = target.stochastic

    def values(self, network, unit, trial):
        trained = _params_of(network, unit)
        target = self.target.values(network, unit, trial)
        return {k: torch.lerp(trained[k].detach(), target[k].to(trained[k]), self.alpha) for k in trained}


def _parse(spec: str) -> tuple[str, float, str]:
    """(kind, alpha, checkpoint path) of a ``--reset`` string; a LayercritError if it is malformed."""
    kind, _, arg = spec.partition(":")
    if kind in ("random", "zero", "remove") and not arg:
        return kind, 0.0, ""
    if kind == "init" and arg:
        return kind, 0.0, arg
    if kind == "interpolate" and arg:
        alpha_s, _, path = arg.partition(":")
        try:
            alpha = float(alpha_s)
        except ValueError:
            alpha = -1.0
        if not 0.0 <= alpha <= 1.0:
            raise LayercritError(f"--reset {spec}: alpha must be a number in [0, 1], e.g. interpolate:0.5")
        return kind, alpha, path
    raise LayercritError(f"unknown reset '{spec}': use one of {', '.join(RESET_KINDS)}")


def check_reset(spec: str) -> str:
    """The kind of a ``--reset`` string (random, zero, remove, init, interpolate), checked without loading anything."""
    return _parse(spec)[0]


def parse_reset(spec: str, *, factory: Callable[[], nn.Module] | None, seed: int,
                trust_pickle: bool = False) -> Reset:
    """Turn a ``--reset`` string into a :class:`Reset`. ``factory`` builds a fresh instance of the
    architecture (``random``, ``init:`` and ``interpolate:`` need it; None: unknown)."""
    kind, alpha, path = _parse(spec)
    if factory is None:
        if kind in ("zero", "remove"):
            return ZeroReset() if kind == "zero" else RemoveReset()
        raise LayercritError(f"reset {spec} needs a fresh instance of the architecture, and there is no factory "
                             "that builds one")
    if kind == "random":
        return RandomReset(factory, seed)
    if kind == "zero":
        return ZeroReset()
    if kind == "remove":
        return RemoveReset()
    if kind == "init":
        return InitReset(spec, _initial(factory, path, trust_pickle))
    target = InitReset(f"init:{path}", _initial(factory, path, trust_pickle)) if path else RandomReset(factory, seed)
    return InterpolateReset(f"interpolate:{alpha:g}" + (f":{path}" if path else ""), alpha, target)


def _initial(factory, path: str, trust_pickle: bool) -> nn.Module:
    net = factory()
    load_into(net, load_state_dict(path, trust_pickle=trust_pickle), path)
    return net.eval()


@contextlib.contextmanager
def layer_reset(network: nn.Module, unit: str, values: dict[str, torch.Tensor]) -> Iterator[None]:
    """Temporarily put ``values`` into the parameters of module ``unit`` they name; restore after."""
    module = network.get_submodule(unit)
    params = {k: module.get_parameter(k) for k in values}
    saved = {k: p.detach().clone() for k, p in params.items()}
    try:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(values[k])
        yield
    finally:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(saved[k])
