"""The built-in reset kinds: the study's ``random``, and ``zero``, ``init:``, ``interpolate:``, ``remove``.

- ``random``: re-randomization (the study). Trial t takes the layer's parameters from a fresh
  instance of the architecture built with a seed derived only from (seed, t), so a given
  (seed, trial, layer) draw is identical whatever else runs, in whatever order or process.
- ``zero``: all parameters of the layer set to 0 (deterministic).
- ``init:<checkpoint>``: re-initialization to the weights at the start of training (Zhang et al.).
- ``interpolate:<alpha>[:<checkpoint>]``: (1 - alpha) * trained + alpha * initial, where
  "initial" is the checkpoint if given, else the trial's random draw (Chatterji et al.).
- ``remove`` (block units only): the residual branch is removed; the block computes its
  shortcut (see models/blocks.py).

Only the unit's parameters change (a layer's own, a block's residual branch); buffers and
every other unit stay trained. PyTorch is imported inside the methods (see base.py).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from ... import validate
from ...errors import ConfigError
from .base import Reset, ResetContext, params_of, register_reset, unit_name

if TYPE_CHECKING:
    import torch.nn as nn


def reset_seed(seed: int, trial: int) -> int:
    """The RNG seed of trial ``trial``'s fresh instance.

    Hash-derived (63 bits) so that it never coincides with a small ``init_seed`` used to
    build ``arch:`` models: a reset must never redraw the model's own initialization.
    """
    digest = hashlib.sha256(f"layercrit/reset/seed={seed}/trial={trial}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@register_reset("random", summary="the study's re-randomization from a fresh seeded instance (default)")
class RandomReset(Reset):
    stochastic = True
    needs_factory = True

    def __init__(self) -> None:
        super().__init__()
        self.factory: Callable[[], nn.Module] | None = None
        self.seed = 0
        self._fresh: tuple[int, nn.Module] | None = None  # (trial, instance): one fresh instance at a time

    def prepare(self, context: ResetContext) -> RandomReset:
        self.factory, self.seed = context.fresh_factory(self.name), context.seed
        return self

    def fresh(self, trial: int) -> nn.Module:
        from ...models.factory import build_seeded  # lazy: kinds are listed without importing PyTorch

        if self.factory is None:
            raise RuntimeError(f"{self!r} used before prepare()")
        if self._fresh is None or self._fresh[0] != trial:
            self._fresh = trial, build_seeded(self.factory, reset_seed(self.seed, trial))
        return self._fresh[1]

    def values(self, network, unit, trial):
        return params_of(self.fresh(trial), unit)


@register_reset("zero", summary="all parameters of the layer set to 0")
class ZeroReset(Reset):
    def values(self, network, unit, trial):
        import torch  # lazy: kinds are listed without importing PyTorch

        return {k: torch.zeros_like(p) for k, p in params_of(network, unit).items()}


@register_reset("init", usage="init:<checkpoint>", summary="the layer's weights at the start of training")
class InitReset(Reset):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path, self.name = path, f"init:{path}"
        self.initial: nn.Module | None = None

    @classmethod
    def parse(cls, arg, spec):
        return cls(arg) if arg else None

    def prepare(self, context: ResetContext) -> InitReset:
        from ...models.checkpoint import load_into, load_state_dict  # lazy: kinds are listed without PyTorch
        from ...models.factory import build_seeded

        net = build_seeded(context.any_factory(), 0)  # its draw is overwritten; the caller's RNG stays as it was
        load_into(net, load_state_dict(self.path, trust_pickle=context.trust_pickle), self.path)
        self.initial = net.eval()
        return self

    def values(self, network, unit, trial):
        if self.initial is None:
            raise RuntimeError(f"{self!r} used before prepare()")
        return params_of(self.initial, unit)

    def files(self) -> list[str]:
        return [self.path]

    def portable(self) -> InitReset:
        out = InitReset(absolute(self.path))
        out.name = self.name
        return out


@register_reset("interpolate", usage="interpolate:<alpha>[:<checkpoint>]",
                summary="(1-alpha) * trained + alpha * initial (the checkpoint, else a random draw)")
class InterpolateReset(Reset):
    def __init__(self, alpha: float, path: str = "") -> None:
        super().__init__()
        self.alpha, self.path = alpha, path
        self.name = f"interpolate:{alpha:g}" + (f":{path}" if path else "")
        self.stochastic = self.needs_factory = not path  # toward the trial's random draw
        self.target: Reset = InitReset(path) if path else RandomReset()

    @classmethod
    def parse(cls, arg, spec):
        if not arg:
            return None
        alpha_s, colon, path = arg.partition(":")
        try:
            alpha = float(alpha_s)
        except ValueError:
            alpha = float("nan")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"{{reset}} {validate.show(spec)}: alpha must be a number in [0, 1], e.g. "
                              "interpolate:0.5", ("reset",))
        if colon and not path:
            raise ConfigError(f"{{reset}} {validate.show(spec)}: give the checkpoint after the second ':' or drop "
                              "it", ("reset",))
        return cls(alpha, path)

    def prepare(self, context: ResetContext) -> InterpolateReset:
        self.target.prepare(context)
        return self

    def files(self) -> list[str]:
        return self.target.files()

    def values(self, network, unit, trial):
        import torch  # lazy: kinds are listed without importing PyTorch

        trained = params_of(network, unit)
        target = self.target.values(network, unit, trial)
        return {k: torch.lerp(trained[k].detach(), target[k].to(trained[k]), self.alpha) for k in trained}

    def portable(self) -> InterpolateReset:
        out = InterpolateReset(self.alpha, absolute(self.path) if self.path else "")
        out.name = self.name
        return out


@register_reset("remove", summary="with {unit} block: the residual branch removed, the block is its shortcut")
class RemoveReset(Reset):
    """The block's residual branch removed: its output parameters zeroed, so the block computes
    exactly its shortcut (``RemovedBlock``)."""

    blocks_only = True

    def values(self, network, unit, trial):
        import torch  # lazy: kinds are listed without importing PyTorch

        if isinstance(unit, str) or not unit.remove:
            raise ConfigError(f"{{reset}} remove applies to residual blocks ({{unit}} block), not to layer "
                              f"{unit_name(unit)}", ("reset", "unit"))
        module = network.get_submodule(unit.name)
        return {k: torch.zeros_like(module.get_parameter(k)) for k in unit.remove}


def absolute(path: str) -> str:
    """A checkpoint path as this process sees it, made absolute (other processes may run elsewhere)."""
    return os.path.abspath(path) if path and os.path.exists(path) else path


__all__ = ["InitReset", "InterpolateReset", "RandomReset", "RemoveReset", "ZeroReset", "reset_seed", "absolute"]
