"""One set of rules for every option, whether it comes from the command line, a study file or Python.

Each checker takes the value and the name it is known by where it came from (``--seed`` on the
command line and in Python, ``study.toml: [study] seed`` in a study file), returns the value in
its canonical form, and raises one :class:`LayercritError` naming the option, the value and the
allowed range. Nothing here imports PyTorch: options are checked before anything heavy runs.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

from .errors import LayercritError

MAX_SEED = 2**63 - 1  # torch generators take unsigned 64-bit seeds; 63 bits fit everywhere (SQLite, JSON)
MAX_NUM_CLASSES = 1_000_000
MAX_INPUT_SIZE = 4096  # pixels per side; larger would need tens of GB per batch
MAX_THREADS = 4096
MAX_TRIALS = 100_000
MAX_BATCH_SIZE = 1_000_000
MAX_SAMPLES = 2**40
CHANNELS = 3  # images are decoded as RGB
LAYER_TYPES = ("conv", "linear", "norm", "embedding")
ENGINES = ("cached", "naive")
UNITS = ("layer", "block")
PRECISIONS = ("fp32", "bf16", "fp16")


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def integer(value, name: str, *, low: int | None = None, high: int | None = None, what: str = "an integer") -> int:
    """``value`` as an int in [low, high] (bools and non-integral floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        else:
            raise LayercritError(f"{name} {_show(value)}: must be {what}{_range(low, high)}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise LayercritError(f"{name} {_show(value)}: must be {what}{_range(low, high)}")
    return value


def _range(low, high) -> str:
    if low is not None and high is not None:
        return f" from {low} to {_big(high)}"
    if low is not None:
        return f" of at least {low}"
    if high is not None:
        return f" of at most {_big(high)}"
    return ""


def _big(n: int) -> str:
    return "2**63 - 1" if n == MAX_SEED else str(n)


def number(value, name: str, *, low: float | None = None, high: float | None = None, positive: bool = False,
           what: str = "a number") -> float:
    """``value`` as a finite float (NaN and infinities are refused), optionally > 0 or in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise LayercritError(f"{name} {_show(value)}: must be {what}")
    value = float(value)
    if not math.isfinite(value):
        raise LayercritError(f"{name} {_show(value)}: must be a finite number")
    if positive and not value > 0:
        raise LayercritError(f"{name} {_show(value)}: must be a positive number")
    if (low is not None and value < low) or (high is not None and value > high):
        raise LayercritError(f"{name} {_show(value)}: must be a number from {low:g} to {high:g}")
    return value


def text(value, name: str, *, allow_empty: bool = False) -> str:
    """``value`` as a string without NUL or other control characters (tab excepted)."""
    if not isinstance(value, str):
        raise LayercritError(f"{name} {_show(value)}: must be text")
    if not allow_empty and not value.strip():
        raise LayercritError(f"{name} is empty: give a value")
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
        raise LayercritError(f"{name} {_show(value)}: holds a control character (e.g. NUL): remove it")
    return value


def optional_text(value, name: str) -> str | None:
    return None if value is None else text(value, name)


def choice(value, name: str, options) -> str:
    if not isinstance(value, str) or value not in options:
        raise LayercritError(f"{name} {_show(value)}: use {' or '.join(options) if len(options) < 3 else ', '.join(options)}")
    return value


def seed(value, name: str = "--seed") -> int:
    return integer(value, name, low=0, high=MAX_SEED)


def num_classes(value, name: str = "--num-classes") -> int | None:
    return None if value is None else integer(value, name, low=1, high=MAX_NUM_CLASSES, what="a class count")


def input_size(value, name: str = "--input-size") -> int | None:
    return None if value is None else integer(value, name, low=1, high=MAX_INPUT_SIZE, what="a size in pixels")


def threads(value, name: str = "--threads") -> int | None:
    return None if value is None else integer(value, name, low=1, high=MAX_THREADS, what="a thread count")


def trials(value, name: str = "--trials") -> int:
    return integer(value, name, low=1, high=MAX_TRIALS, what="a number of trials")


def batch_size(value, name: str = "--batch-size") -> int:
    return integer(value, name, low=1, high=MAX_BATCH_SIZE, what="a batch size")


def samples(value, name: str = "--samples") -> int | None:
    """A number of images (at least 1), or None / "all" for every image."""
    if value is None or value == "all":
        return None
    return integer(value, name, low=1, high=MAX_SAMPLES, what="a number of images (or 'all')")


def target_ci(value, name: str = "--target-ci") -> float | None:
    return None if value is None else number(value, name, positive=True,
                                             what="a positive number of percentage points")


def normalization(mean, std, prefix: str = "--") -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """Both or neither of mean and std: three finite numbers each (RGB), every std positive."""
    if mean is None and std is None:
        return None, None
    if (mean is None) != (std is None):
        given, missing = ("mean", "std") if std is None else ("std", "mean")
        raise LayercritError(f"{prefix}{given} without {prefix}{missing}: give both (one value per RGB channel)")
    out = []
    for label, values in (("mean", mean), ("std", std)):
        opt = f"{prefix}{label}"
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            raise LayercritError(f"{opt} {_show(values)}: give {CHANNELS} numbers, one per RGB channel")
        if len(values) != CHANNELS:
            raise LayercritError(f"{opt} has {len(values)} value(s): give {CHANNELS}, one per RGB channel, "
                                 "e.g. 0.5,0.5,0.5")
        out.append(tuple(number(v, opt, positive=label == "std") for v in values))
    return out[0], out[1]


def layer_types(types, name: str = "--types") -> tuple[str, ...]:
    """Layer kinds: a comma-separated string or a sequence, at least one, each of LAYER_TYPES."""
    if isinstance(types, str):
        items = [t.strip() for t in types.split(",")]
    elif isinstance(types, (list, tuple)):
        items = [t.strip() if isinstance(t, str) else t for t in types]
    else:
        raise LayercritError(f"{name} {_show(types)}: give layer kinds, e.g. conv,linear")
    items = [t for t in items if t != ""]
    bad = [t for t in items if not isinstance(t, str) or t not in LAYER_TYPES]
    if bad:
        raise LayercritError(f"{name}: unknown layer kind(s) {', '.join(map(_show, bad))}: use {', '.join(LAYER_TYPES)}")
    if not items:
        raise LayercritError(f"{name} {_show(types)} names no layer kind: use any of {', '.join(LAYER_TYPES)}, "
                             "e.g. conv,linear")
    return tuple(dict.fromkeys(items))


RESET_HELP = "random, zero, init:<checkpoint>, interpolate:<alpha>[:<checkpoint>] or remove"


def reset_name(spec, name: str = "--reset") -> str:
    """The canonical name of a reset spec, checked without loading anything: ``interpolate:0.50``
    and ``interpolate:.5`` both become ``interpolate:0.5``; ``init:`` needs a checkpoint path."""
    spec = text(spec, name)
    kind, _, arg = spec.partition(":")
    if kind in ("random", "zero", "remove") and not arg and ":" not in spec:
        return kind
    if kind == "init" and arg:
        return f"init:{arg}"
    if kind == "interpolate" and arg:
        alpha_s, _, path = arg.partition(":")
        try:
            alpha = float(alpha_s)
        except ValueError:
            alpha = float("nan")
        if not 0.0 <= alpha <= 1.0:
            raise LayercritError(f"{name} {_show(spec)}: alpha must be a number in [0, 1], e.g. interpolate:0.5")
        if ":" in arg and not path:
            raise LayercritError(f"{name} {_show(spec)}: give the checkpoint after the second ':' or drop it")
        return f"interpolate:{alpha:g}" + (f":{path}" if path else "")
    raise LayercritError(f"unknown reset {_show(spec)}{'' if name == '--reset' else f' in {name}'}: use one of {RESET_HELP}")


def resets(specs, name: str = "--reset") -> list[str]:
    """Reset specs in canonical form, duplicates dropped (first occurrence kept), at least one."""
    if isinstance(specs, str):
        specs = [specs]
    if not isinstance(specs, (list, tuple)):
        raise LayercritError(f"{name} {_show(specs)}: give a list of resets ({RESET_HELP})")
    if not specs:
        raise LayercritError(f"{name}: no reset given: use one of {RESET_HELP}")
    return list(dict.fromkeys(reset_name(s, name) for s in specs))


def measure_options(*, seed_=0, trials_=3, batch_size_=128, samples_=None, input_size_=None, target_ci_=None,
                    engine="cached", precision="fp32", unit="layer", types=None, reset=None) -> dict:
    """Every measurement option at once (CLI before loading anything, Python in prepare_measurement)."""
    out: dict[str, Any] = {"seed": seed(seed_), "trials": trials(trials_), "batch_size": batch_size(batch_size_),
           "samples": samples(samples_), "input_size": input_size(input_size_), "target_ci": target_ci(target_ci_),
           "engine": choice(engine, "--engine", ENGINES), "precision": choice(precision, "--precision", PRECISIONS),
           "unit": choice(unit, "--unit", UNITS)}
    if types is not None:
        out["types"] = layer_types(types)
    if reset is not None:
        out["reset"] = resets(reset)
    return out


def model_options(*, num_classes_=None, init_seed=0, mean=None, std=None) -> dict:
    """The options of create_model() that are plain values."""
    m, s = normalization(mean, std)
    return {"num_classes": num_classes(num_classes_), "init_seed": seed(init_seed, "--init-seed"), "mean": m, "std": s}
