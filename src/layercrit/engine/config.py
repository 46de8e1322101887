"""``MeasureConfig``: every setting of a measurement, checked once.

A frozen dataclass: build it with keywords (``MeasureConfig(trials=1, reset=["random", "zero"])``)
or derive one with :meth:`MeasureConfig.replace`. Values are checked and brought into canonical
form in ``__post_init__`` (sequences become tuples, reset specs their canonical names); a bad value
raises a :class:`~layercrit.errors.ConfigError` naming the Python field (``batch_size``), which the
command line shows as its flag (``--batch-size``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import validate
from ..errors import ConfigError, LayercritError
from ..resets.layers import DEFAULT_TYPES
from . import batching

ENGINES = validate.ENGINES
UNITS = validate.UNITS
PRECISIONS = validate.PRECISIONS
SPLITS = ("train", "test")


@dataclass(frozen=True)
class MeasureConfig:
    """How to measure: which units, which resets, how many trials and images, how to compute."""

    reset: tuple[str, ...] = ("random",)  # reset specs (see layercrit.resets); a single string is one reset
    trials: int = 3  # trials of stochastic resets (deterministic ones run trial 0 only)
    seed: int = 0  # seeds the image draw and the reset draws
    samples: int | None = 10000  # images drawn with seed (None: all)
    unit: str = "layer"  # "layer" (the study) or "block" (residual blocks)
    types: tuple[str, ...] = DEFAULT_TYPES  # layer kinds with unit="layer" (conv, linear, norm, embedding)
    layers: tuple[str, ...] = ()  # glob patterns over module names; a leading ! excludes (empty: all)
    engine: str = "cached"  # "cached" (recompute only what a reset changes) or "naive" (a full pass per unit)
    precision: str = "fp32"  # fp32, bf16 or fp16
    batch_size: int | str = 128  # images per batch, or "auto": the fastest that fits max_memory (batching.py)
    max_memory: int | str | None = None  # with batch_size "auto": bytes, "12G", "512M" or "40%" (of free memory);
    #                                      default half the available RAM / 80 % of free GPU memory
    target_ci: float | None = None  # adaptive sampling: stop a unit at this 95 % CI half-width [pp]
    channels_last: bool = True  # convolutions in channels-last memory format
    split: str = "test"  # split of torchvision-format CIFAR-10 data
    input_size: int | None = None  # input resolution for loading data (default: the model's)
    data_cache: bool = True  # keep decoded images in $LAYERCRIT_CACHE/data
    trust_pickle: bool = False  # allow init:/interpolate: checkpoints that need arbitrary unpickling

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: canonical forms are set once, here
        set_(self, "reset", tuple(_check("reset", validate.resets, self.reset)))
        set_(self, "trials", _check("trials", validate.trials, self.trials))
        set_(self, "seed", _check("seed", validate.seed, self.seed))
        set_(self, "samples", _check("samples", validate.samples, self.samples))
        set_(self, "unit", _check("unit", validate.choice, self.unit, UNITS))
        set_(self, "types", _check("types", validate.layer_types, self.types))
        set_(self, "layers", _patterns(self.layers))
        set_(self, "engine", _check("engine", validate.choice, self.engine, ENGINES))
        set_(self, "precision", _check("precision", validate.choice, self.precision, PRECISIONS))
        set_(self, "batch_size", _check("batch_size", _batch_size, self.batch_size))
        set_(self, "max_memory", _check("max_memory", batching.check_memory, self.max_memory))
        if self.max_memory is not None and self.batch_size != "auto":
            raise ConfigError("{max_memory} is the memory budget of {batch_size} auto: add {batch_size} auto "
                              "(or leave {max_memory} out)", ("max_memory", "batch_size"))
        set_(self, "target_ci", _check("target_ci", validate.target_ci, self.target_ci))
        set_(self, "split", _check("split", validate.choice, self.split, SPLITS))
        set_(self, "input_size", _check("input_size", validate.input_size, self.input_size))
        for name in ("channels_last", "data_cache", "trust_pickle"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{{{name}}} {getattr(self, name)!r}: must be True or False", (name,))
        if "remove" in self.reset and self.unit != "block":
            raise ConfigError("{reset} remove removes residual blocks: add {unit} block", ("reset", "unit"))

    def replace(self, **overrides: Any) -> MeasureConfig:
        """A copy with ``overrides`` (field names; an unknown name is a ConfigError)."""
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ConfigError(f"unknown measurement setting(s) {', '.join(unknown)}: use any of "
                              f"{', '.join(f.name for f in dataclasses.fields(self))}", ())
        return dataclasses.replace(self, **overrides) if overrides else self

    def trials_of(self, stochastic: bool) -> range:
        """The trials a reset runs: all of them if it is stochastic, else trial 0 only."""
        return range(self.trials) if stochastic else range(1)


def _batch_size(value: Any, name: str) -> int | str:
    """A batch size, or "auto" (any case): chosen when the plan is made (engine/batching.py)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    return validate.batch_size(value, name)


def _check(name: str, check: Callable[..., Any], value: Any, *args: Any) -> Any:
    """Run a :mod:`layercrit.validate` checker with the field as a ``{name}`` placeholder."""
    try:
        return check(value, "{" + name + "}", *args)
    except ConfigError:
        raise
    except LayercritError as e:
        raise ConfigError(str(e), (name,)) from None


def _patterns(value: Sequence[str] | str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (str, list, tuple)):
        raise ConfigError(f"{{layers}} {value!r}: give glob patterns (text), e.g. 'layer4.*'", ("layers",))
    items = [value] if isinstance(value, str) else list(value)
    return tuple(_check("layers", validate.text, p) for p in items)
