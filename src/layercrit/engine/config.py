"""``MeasureConfig``: every option of a measurement, defined once.

Each field is declared with :func:`option`: its type and default (the dataclass's own), the checker that
brings a value into canonical form, its allowed values, its help text and its place in the command's help.
Everything else is derived from this one table:

- Python: ``MeasureConfig(trials=1, reset=["random", "zero"])``, :meth:`MeasureConfig.replace`, and the
  keyword arguments of ``layercrit.measure``;
- the command line: the flags of ``layercrit measure`` and ``layercrit study run`` (``layercrit.cli.options``:
  ``batch_size`` is ``--batch-size``; a bool that defaults to True is ``--no-<name>``);
- study files: the measurement settings of ``[measure]`` (or ``[study]``, as before), under the field names.

Adding a measurement option is one field here. A bad value raises a :class:`~layercrit.errors.ConfigError`
naming the field (``batch_size``), which the command line shows as its flag (``--batch-size``) and a study
file as its key. Help texts refer to other options as ``{field}`` placeholders, rendered the same way.
This module does not import PyTorch: the command line builds its flags from it before loading anything.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import validate
from ..errors import ConfigError, LayercritError
from ..resets.kinds import get_reset_kind, reset_names

ENGINES = ("cached", "naive")
UNITS = ("layer", "block")
PRECISIONS = ("fp32", "bf16", "fp16")
SPLITS = ("train", "test")
GROUPS = ("model", "data", "measurement", "speed")  # where a flag appears in a command's help


def option(default: Any, help: str, *, check: Callable[[Any, str], Any] | None = None,
           choices: Sequence[str] | None = None, parse: Callable[[str], Any] | None = None,
           group: str = "measurement", metavar: str | None = None, many: str | None = None,
           default_text: str | None = None, aliases: Sequence[str] = ()) -> Any:
    """A field of :class:`MeasureConfig` with what the command line and study files need to know about it.

    ``check(value, name)``: the value in canonical form, or a LayercritError (``name`` is ``"{field}"``);
    default: one of ``choices``, or a bool. ``parse``: command-line text to a value (``int``; a ValueError's
    text is the refusal); default: the text itself. ``many``: ``"append"`` (a repeatable flag) or ``"+"``
    (several values after one flag). ``default_text``: the default as the help shows it (default: the value).
    ``aliases``: other keys a study file may use (``resets``)."""
    if check is None and choices is None and not isinstance(default, bool):
        raise TypeError("option(): give check= or choices=")
    if group not in GROUPS:
        raise TypeError(f"option(): group must be one of {', '.join(GROUPS)}")
    return dataclasses.field(default=default, metadata={
        "help": help, "check": check, "choices": tuple(choices) if choices else None, "parse": parse,
        "group": group, "metavar": metavar, "many": many, "default_text": default_text, "aliases": tuple(aliases)})


def _samples_text(text: str) -> int | str:
    if text == "all":
        return "all"  # not None: that is "not given" on the command line
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a number of images (or 'all')") from None


def _batch_size_text(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a number of images (or 'auto')") from None


def _temperature(value: Any, name: str) -> float | str | None:
    """None (the study's softmax), a positive T, or "calibrate" (fitted per model, see engine/calibration.py)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "calibrate"):
        return value if value is None else "calibrate"
    t = validate.number(value, name, positive=True)
    return None if t == 1.0 else t  # T = 1 is no scaling: the same run as without


def _temperature_text(text: str) -> float | str:
    if text.strip().lower() == "calibrate":
        return "calibrate"
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a temperature (a positive number, or 'calibrate')") from None


OUTPUTS = ("probs", "logits")  # besides "module:<name>" and (Python only) a callable (network, x) -> tensor


def _output(value: Any, name: str) -> str | Callable[..., Any]:
    """What a measurement compares: "probs" (the study's softmax), "logits", "module:<name>", or a callable."""
    if callable(value) and not isinstance(value, str):
        return value
    if not isinstance(value, str):
        validate.fail(name, f"{name} {validate.show(value)}: use probs, logits, module:<name> (a module of the "
                            "network, e.g. module:global_pool) or, in Python, a callable (model, x) -> tensor")
    text = validate.text(value, name).strip()
    if text.lower() in OUTPUTS:
        return text.lower()
    kind, sep, module = text.partition(":")
    if kind.strip().lower() == "module" and sep:
        module = module.strip()
        if not module:
            validate.fail(name, f"{name} {validate.show(value)}: name the module after module:, e.g. "
                                "module:global_pool")
        return f"module:{module}"
    validate.fail(name, f"{name} {validate.show(value)}: use probs, logits or module:<name> (a module of the network, "
                        "e.g. module:global_pool)")


def output_label(output: str | Callable[..., Any]) -> str:
    """How a run records and a report names its ``output``: the text, or ``callable:<module>.<qualname>``."""
    if isinstance(output, str):
        return output
    fn = getattr(output, "func", output)  # functools.partial: the function it wraps
    return f"callable:{getattr(fn, '__module__', None) or '?'}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def compares_classes(output: str | Callable[..., Any]) -> bool:
    """Whether ``output`` is the model's class scores ("probs", "logits"): only then are the class metrics
    (top-1/top-5 accuracy, loss, agreement, recovered accuracy, cross-entropy and KL) defined."""
    return output in OUTPUTS


def _patterns(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (str, list, tuple)):
        validate.fail(name, f"{name} {validate.show(value)}: give glob patterns (text), e.g. 'layer4.*'")
    items = [value] if isinstance(value, str) else list(value)
    return tuple(validate.text(p, name) for p in items)


@dataclass(frozen=True)
class MeasureConfig:
    """How to measure: which units, which resets, how many trials and images, how to compute.

    Frozen; every value is checked (and brought into canonical form) when it is made, and a bad one is a
    :class:`~layercrit.errors.ConfigError` naming the field. Each field is also a keyword parameter of
    :func:`layercrit.measure` (which overrides a config given there), a flag of ``layercrit measure`` and
    ``layercrit study run`` (``batch_size`` is ``--batch-size``) and a key of a study file's ``[measure]``.

    Args:
        reset: what a unit is reset to, one kind or several (default ``("random",)``).
        trials: trials of stochastic resets (default 3).
        seed: seed of the image draw and the reset draws (default 0).
        samples: images drawn (default 10,000; None or ``"all"``: every image).
        unit: ``"layer"`` (default) or ``"block"``.
        types: layer kinds with ``unit="layer"`` (default conv, linear; also norm, embedding).
        layers: glob patterns over module names, ``!`` excludes (default: all).
        engine: ``"cached"`` (default) or ``"naive"``.
        precision: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"``.
        batch_size: images per batch (default 128) or ``"auto"``.
        max_memory: the memory budget of ``batch_size="auto"``.
        target_ci: adaptive sampling's target 95 % CI half-width in percentage points (default off).
        output: what is compared (default ``"probs"``; ``"logits"``, ``"module:<name>"``, a callable).
        temperature: T dividing the logits before every softmax metric, or ``"calibrate"`` (default none).
        calibration_samples: held-out images to fit T on (default 2,000).
        channels_last: channels-last convolutions (default True).
        split: the split of torchvision-format CIFAR-10 (default ``"test"``).
        input_size: the resolution images are loaded at (default: the model's).
        data_cache: cache decoded images (default True).
        trust_pickle: allow checkpoints that need arbitrary unpickling (default False).

    Examples:
        >>> import layercrit as lc
        >>> config = lc.MeasureConfig(reset=["random", "zero"], trials=2, layers="layer4.*")
        >>> config.reset, config.layers, config.replace(trials=1).trials
        (('random', 'zero'), ('layer4.*',), 1)
        >>> lc.MeasureConfig(batch_size=0)
        Traceback (most recent call last):
        ...
        layercrit.errors.ConfigError: batch_size 0: must be a batch size from 1 to 1000000
    """

    reset: tuple[str, ...] = option(
        ("random",), "what a unit is reset to, repeatable (kinds below)", check=lambda v, _: reset_names(v),
        many="append", metavar="R", aliases=("resets",))
    trials: int = option(3, "trials of stochastic resets (deterministic ones run trial 0 only)",
                         check=validate.trials, parse=int)
    seed: int = option(0, "seed of the image draw and the reset draws", check=validate.seed, parse=int)
    samples: int | None = option(10000, "images drawn once with {seed}; 'all': every image", check=validate.samples,
                                 parse=_samples_text, group="data")
    unit: str = option("layer", "layer: one conv/linear/... layer per unit (the study); block: one residual block "
                       "per unit (ResNet bottleneck/basic blocks, ViT blocks), reset as a whole or {reset} remove",
                       choices=UNITS, group="model")
    types: tuple[str, ...] = option(validate.DEFAULT_TYPES, "layer kinds with {unit} layer: conv,linear,norm,embedding",
                                    check=validate.layer_types, group="model")
    layers: tuple[str, ...] = option((), "glob patterns over module names; a leading ! excludes, e.g. 'layer4.*' "
                                     "'!*.downsample.*'", check=_patterns, many="+", metavar="PATTERN", group="model",
                                     default_text="all")
    engine: str = option("cached", "cached: run the model once per batch and recompute only what a reset changes; "
                         "naive: a full forward pass per reset, as the original study", choices=ENGINES, group="speed")
    precision: str = option("fp32", "compute precision (bf16/fp16 are for GPUs, see docs/engine.md)",
                            choices=PRECISIONS, group="speed")
    batch_size: int | str = option(128, "images per batch; auto: the fastest of a few sizes whose memory fits "
                                   "{max_memory} (docs/engine.md)", check=validate.batch_size_or_auto,
                                   parse=_batch_size_text, metavar="N|auto")
    max_memory: int | str | None = option(None, "with {batch_size} auto: memory budget, e.g. 12G, 512M or 40% (of "
                                          "free memory)", check=validate.memory_size, metavar="SIZE",
                                          default_text="50% of available RAM, 80% of free GPU memory")
    target_ci: float | None = option(None, "adaptive sampling: stop a (layer, trial) once the 95% confidence "
                                     "half-width of its criticality is at most PP percentage points",
                                     check=validate.target_ci, parse=float, metavar="PP", group="speed",
                                     default_text="off: every image, the study's method")
    output: str | Callable[..., Any] = option(
        "probs", "what is compared with the unmodified model: probs (the softmax, the study's criticality), logits "
        "(raw class scores), or module:<name> (the output of that module of the network, flattened per image, e.g. "
        "module:global_pool, the pooled features of a headless backbone; layers that run after it are refused); "
        "criticality is 100 x (1 - cosine) of these vectors; the class metrics (top-1/top-5, loss, agreement, "
        "recovered accuracy, cross-entropy, KL) need probs or logits and are empty otherwise. In Python also a "
        "callable (model, x) -> tensor, called with the network and its normalized input (see docs/engine.md)",
        check=_output, metavar="probs|logits|module:NAME")
    temperature: float | str | None = option(
        None, "divide the logits by T before every softmax metric (criticality included); calibrate: fit T per model "
        "by minimizing the NLL of the unmodified model on {calibration_samples} labelled images drawn after the "
        "measured ones (disjoint), so that models are compared at equal calibration", check=_temperature,
        parse=_temperature_text, metavar="T|calibrate", default_text="none: the study's softmax")
    calibration_samples: int = option(2000, "with {temperature} calibrate: held-out images to fit T on",
                                      check=validate.samples, parse=int, group="data")
    channels_last: bool = option(True, "convolutions in channels-last memory format", group="speed")
    split: str = option("test", "split of torchvision-format CIFAR-10", choices=SPLITS, group="data")
    input_size: int | None = option(None, "input resolution of the images", check=validate.input_size, parse=int,
                                    group="data", default_text="the model's")
    data_cache: bool = option(True, "keep decoded images in $LAYERCRIT_CACHE/data for later runs", group="speed")
    trust_pickle: bool = option(False, "allow checkpoints that need arbitrary unpickling (only for files you trust)",
                                group="model")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # frozen: canonical forms are set once, here
            object.__setattr__(self, f.name, check_field(f, getattr(self, f.name)))
        if self.max_memory is not None and self.batch_size != "auto":
            raise ConfigError("{max_memory} is the memory budget of {batch_size} auto: add {batch_size} auto "
                              "(or leave {max_memory} out)", ("max_memory", "batch_size"))
        if self.temperature is not None and self.output != "probs":
            raise ConfigError(f"{{temperature}} scales the softmax, but {{output}} {output_label(self.output)} compares "
                              "no softmax: leave {temperature} out (or use {output} probs)", ("temperature", "output"))
        blocks_only = [r for r in self.reset if getattr(get_reset_kind(r.partition(":")[0]), "blocks_only", False)]
        if blocks_only and self.unit != "block":
            raise ConfigError(f"{{reset}} {blocks_only[0]} removes residual blocks: add {{unit}} block",
                              ("reset", "unit"))

    @classmethod
    def options(cls) -> list[dataclasses.Field]:
        """The fields, each with its metadata (help, choices, group, ...): what flags and study keys come from."""
        return list(dataclasses.fields(cls))

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Field name -> default."""
        return {f.name: f.default for f in dataclasses.fields(cls)}

    def replace(self, **overrides: Any) -> MeasureConfig:
        """A copy with ``overrides`` (field names; an unknown name is a ConfigError)."""
        names = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise ConfigError(f"unknown measurement setting(s) {', '.join(unknown)}: use any of {', '.join(names)}", ())
        return dataclasses.replace(self, **overrides) if overrides else self

    def trials_of(self, stochastic: bool) -> range:
        """The trials a reset runs: all of them if it is stochastic, else trial 0 only."""
        return range(self.trials) if stochastic else range(1)


def check_field(f: dataclasses.Field, value: Any) -> Any:
    """``value`` of field ``f`` in canonical form; a ConfigError naming the field."""
    name = "{" + f.name + "}"
    check, choices = f.metadata.get("check"), f.metadata.get("choices")
    try:
        if check is not None:
            return check(value, name)
        if choices is not None:
            return validate.choice(value, name, choices)
        if not isinstance(value, bool):
            raise ConfigError(f"{name} {value!r}: must be True or False", (f.name,))
        return value
    except ConfigError:
        raise
    except LayercritError as e:  # a checker that words its own message: still about this field
        raise ConfigError(str(e), (f.name,)) from None
