"""One set of rules for every option, whether it comes from the command line, a study file or Python.

Each checker takes the value and the name it is known by where it came from, returns the value in its
canonical form, and raises one :class:`LayercritError` naming the option, the value and the allowed range.
A name written as a placeholder, ``"{seed}"`` (what :class:`layercrit.MeasureConfig` passes), makes the error
a :class:`ConfigError` of that field: Python shows ``seed``, the command line ``--seed``; a study file
passes its own words (``study.toml: [study] seed``). Nothing here imports PyTorch: options are checked
before anything heavy runs.
"""
from __future__ import annotations

import math
import numbers
import re
from typing import Any, NoReturn

from .errors import ConfigError, LayercritError

MAX_SEED = 2**63 - 1  # torch generators take unsigned 64-bit seeds; 63 bits fit everywhere (SQLite, JSON)
MAX_NUM_CLASSES = 1_000_000
MAX_INPUT_SIZE = 4096  # pixels per side; larger would need tens of GB per batch
MAX_THREADS = 4096
MAX_TRIALS = 100_000
MAX_BATCH_SIZE = 1_000_000
MAX_SAMPLES = 2**40
CHANNELS = 3  # images are decoded as RGB
LAYER_TYPES = ("conv", "linear", "norm", "embedding")
DEFAULT_TYPES = ("conv", "linear")  # the study's 54 layers of a ResNet-50
ENGINES = ("cached", "naive")
UNITS = ("layer", "block")
PRECISIONS = ("fp32", "bf16", "fp16")


_FIELD = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


def show(value) -> str:
    """A value as a message shows it: its repr, cut at 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def fail(name: str, message: str) -> NoReturn:
    """Raise ``message`` about the option ``name``: a ConfigError of the field where ``name`` is a
    placeholder (``"{seed}"``), else a LayercritError (a study file's own wording)."""
    m = _FIELD.fullmatch(name)
    if m:
        raise ConfigError(message, (m.group(1),))
    raise LayercritError(message)


def integer(value, name: str, *, low: int | None = None, high: int | None = None, what: str = "an integer") -> int:
    """``value`` as an int in [low, high] (bools and non-integral floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        else:
            fail(name, f"{name} {show(value)}: must be {what}{_range(low, high)}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        fail(name, f"{name} {show(value)}: must be {what}{_range(low, high)}")
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
        fail(name, f"{name} {show(value)}: must be {what}")
    value = float(value)
    if not math.isfinite(value):
        fail(name, f"{name} {show(value)}: must be a finite number")
    if positive and not value > 0:
        fail(name, f"{name} {show(value)}: must be a positive number")
    if (low is not None and value < low) or (high is not None and value > high):
        fail(name, f"{name} {show(value)}: must be a number from {low:g} to {high:g}")
    return value


def text(value, name: str, *, allow_empty: bool = False) -> str:
    """``value`` as a string without NUL or other control characters (tab excepted)."""
    if not isinstance(value, str):
        fail(name, f"{name} {show(value)}: must be text")
    if not allow_empty and not value.strip():
        fail(name, f"{name} is empty: give a value")
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
        fail(name, f"{name} {show(value)}: holds a control character (e.g. NUL): remove it")
    return value


def optional_text(value, name: str) -> str | None:
    return None if value is None else text(value, name)


def choice(value, name: str, options) -> str:
    if not isinstance(value, str) or value not in options:
        fail(name, f"{name} {show(value)}: use {' or '.join(options) if len(options) < 3 else ', '.join(options)}")
    return value


def seed(value, name: str = "{seed}") -> int:
    return integer(value, name, low=0, high=MAX_SEED)


def num_classes(value, name: str = "{num_classes}") -> int | None:
    return None if value is None else integer(value, name, low=1, high=MAX_NUM_CLASSES, what="a class count")


def input_size(value, name: str = "{input_size}") -> int | None:
    return None if value is None else integer(value, name, low=1, high=MAX_INPUT_SIZE, what="a size in pixels")


def threads(value, name: str = "{threads}") -> int | None:
    return None if value is None else integer(value, name, low=1, high=MAX_THREADS, what="a thread count")


def trials(value, name: str = "{trials}") -> int:
    return integer(value, name, low=1, high=MAX_TRIALS, what="a number of trials")


def batch_size(value, name: str = "{batch_size}") -> int:
    return integer(value, name, low=1, high=MAX_BATCH_SIZE, what="a batch size")


def samples(value, name: str = "{samples}") -> int | None:
    """A number of images (at least 1), or None / "all" for every image."""
    if value is None or value == "all":
        return None
    return integer(value, name, low=1, high=MAX_SAMPLES, what="a number of images (or 'all')")


def target_ci(value, name: str = "{target_ci}") -> float | None:
    return None if value is None else number(value, name, positive=True,
                                             what="a positive number of percentage points")


def normalization(mean, std, names: tuple[str, str] = ("{mean}", "{std}")) -> tuple[tuple[float, ...] | None,
                                                                                 tuple[float, ...] | None]:
    """Both or neither of mean and std: three finite numbers each (RGB), every std positive. ``names``:
    what mean and std are called (default: the fields ``mean`` and ``std``)."""
    if mean is None and std is None:
        return None, None
    if (mean is None) != (std is None):
        given, missing = names if std is None else names[::-1]
        fail(given, f"{given} without {missing}: give both (one value per RGB channel)")
    out = []
    for opt, values, positive in ((names[0], mean, False), (names[1], std, True)):
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            fail(opt, f"{opt} {show(values)}: give {CHANNELS} numbers, one per RGB channel")
        if len(values) != CHANNELS:
            fail(opt, f"{opt} has {len(values)} value(s): give {CHANNELS}, one per RGB channel, e.g. 0.5,0.5,0.5")
        out.append(tuple(number(v, opt, positive=positive) for v in values))
    return out[0], out[1]


def layer_types(types, name: str = "{types}") -> tuple[str, ...]:
    """Layer kinds: a comma-separated string or a sequence, at least one, each of LAYER_TYPES."""
    if isinstance(types, str):
        items = [t.strip() for t in types.split(",")]
    elif isinstance(types, (list, tuple)):
        items = [t.strip() if isinstance(t, str) else t for t in types]
    else:
        fail(name, f"{name} {show(types)}: give layer kinds, e.g. conv,linear")
    items = [t for t in items if t != ""]
    bad = [t for t in items if not isinstance(t, str) or t not in LAYER_TYPES]
    if bad:
        fail(name, f"{name}: unknown layer kind(s) {', '.join(map(show, bad))}: use {', '.join(LAYER_TYPES)}")
    if not items:
        fail(name, f"{name} {show(types)} names no layer kind: use any of {', '.join(LAYER_TYPES)}, "
                             "e.g. conv,linear")
    return tuple(dict.fromkeys(items))


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
          "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}


def batch_size_or_auto(value, name: str = "{batch_size}") -> int | str:
    """A batch size, or "auto" (any case): chosen when the plan is made (engine/batching.py)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    return batch_size(value, name)


def memory_size(value, name: str = "{max_memory}") -> int | str | None:
    """A memory budget, checked but not yet resolved: bytes (int), or ``"40%"`` (a share of what is free
    when it is used). Sizes such as ``12G``, ``512MiB``, ``2.5GB`` become bytes."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        fail(name, f"{name} {value!r}: use a size such as 8G, 512M, 2.5GiB or a share such as 50%")
    if isinstance(value, int):
        if value < 1:
            fail(name, f"{name} {value}: must be a positive number of bytes")
        return value
    s = value.strip().lower()
    if s.endswith("%"):
        try:
            share = float(s[:-1])
        except ValueError:
            share = -1.0
        if not 0 < share <= 100:
            fail(name, f"{name} {value}: a percentage must be in (0, 100]")
        return f"{share:g}%"
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([a-z]*)", s)
    if not m or m.group(2) not in _UNITS or float(m.group(1)) * _UNITS[m.group(2)] < 1:
        fail(name, f"{name} {value}: use a size such as 8G, 512M, 2.5GiB or a share such as 50%")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def model_options(*, num_classes_=None, init_seed=0, mean=None, std=None) -> dict[str, Any]:
    """The options of create_model() that are plain values (ConfigErrors name its parameters)."""
    m, s = normalization(mean, std)
    return {"num_classes": num_classes(num_classes_), "init_seed": seed(init_seed, "{init_seed}"), "mean": m, "std": s}
