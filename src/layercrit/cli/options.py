"""Flags from ``MeasureConfig``: the measurement options of ``measure`` and ``study run``, defined once.

Every field of :class:`layercrit.MeasureConfig` becomes a flag (``batch_size`` -> ``--batch-size``; a bool
that defaults to True -> ``--no-<name>``, one that defaults to False -> ``--<name>``), with its help text
(``{field}`` placeholders rendered as flags), its default, choices and value parser. A flag left out is
None in the parsed arguments, so the config's (or a study file's) own value applies.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from . import flag

if TYPE_CHECKING:
    from ..engine.config import MeasureConfig

_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


def config_class() -> type[MeasureConfig]:
    """The options table (looked up at call time: a test may extend it)."""
    from ..engine import config  # torch-free: the help is built without loading PyTorch

    return config.MeasureConfig


def switched_off(field: str) -> bool:
    """Whether ``field`` is a MeasureConfig switch that is on by default (its flag turns it off)."""
    f = next((f for f in config_class().options() if f.name == field), None)
    return f is not None and f.default is True


def render(text: str, flags: dict[str, str] | None = None) -> str:
    """Help or message text with each ``{field}`` placeholder as its flag."""
    return _PLACEHOLDER.sub(lambda m: flag(m.group(1), flags), text)


def _type(parse: Callable[[str], Any] | None) -> Callable[[str], Any] | None:
    """argparse's type: builtins as they are (argparse words their refusal), others with their own words."""
    if parse is None or parse in (int, float):
        return parse

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def _default_text(f: dataclasses.Field) -> str | None:
    meta = f.metadata
    if meta.get("default_text"):
        return meta["default_text"]
    value = f.default
    if isinstance(value, bool) or value is None:
        return None
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def add_config_args(parser: argparse.ArgumentParser, groups: dict[str, Any] | None = None, *,
                    only: Iterable[str] | None = None) -> None:
    """Add a flag for every MeasureConfig field (or those in ``only``) that ``parser`` does not have yet,
    into ``groups[field's group]`` (default: the parser itself)."""
    wanted = None if only is None else set(only)
    for f in config_class().options():
        if wanted is not None and f.name not in wanted:
            continue
        meta, name = f.metadata, flag(f.name)
        if name in parser._option_string_actions:  # the command defines it (e.g. --trust-pickle with the model)
            continue
        target = (groups or {}).get(meta["group"], parser)
        shown = _default_text(f)
        text = render(meta["help"]) + (f" (default {shown})" if shown else "")
        if f.default is True:  # the flag turns it off
            text = f"turn off (on by default): {render(meta['help'])}"
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": text.replace("%", "%%")}
        if isinstance(f.default, bool):
            kwargs.update(action="store_const", const=not f.default)
        else:
            kwargs.update(type=_type(meta["parse"]), metavar=meta["metavar"], choices=meta["choices"])
            if meta["many"] == "append":
                kwargs["action"] = "append"
            elif meta["many"]:
                kwargs["nargs"] = meta["many"]
        target.add_argument(name, **kwargs)


def given_config(args: argparse.Namespace) -> dict[str, Any]:
    """The measurement options given on the command line (field name -> value), none of the defaults."""
    return {f.name: getattr(args, f.name) for f in config_class().options() if getattr(args, f.name, None) is not None}


def config_from_args(args: argparse.Namespace) -> MeasureConfig:
    """The MeasureConfig of the flags given (the config's defaults for the others)."""
    return config_class()(**given_config(args))
