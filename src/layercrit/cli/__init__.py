"""Command line: a thin layer over the Python API (``layercrit.measure``, ``layercrit.export``, ...).

Each command group lives in its own module here with ``register(subparsers)``, which adds
its parser(s) and sets ``func`` (called with the parsed args; returns an exit status).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys

from .. import __version__
from ..errors import LayercritError, Message, NamedFields
from ..paths import os_error

# Command modules, in the order their commands appear in --help.
COMMAND_MODULES = ["measure", "zoo", "report", "train", "study", "compress"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layercrit", description="Layer criticality of vision models.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (so redirected stderr is honoured)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


class _LowerLevelFormatter(logging.Formatter):
    """``layercrit: warning: ...``, ``layercrit: info: ...``: as the CLI's own lines read."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.msg
        if isinstance(msg, Message):  # a library message naming options: here they are flags
            msg = msg.naming({f: flag(f) for f in re.findall(r"\{([a-z_][a-z0-9_]*)\}", msg.template)})
        record = logging.makeLogRecord({**record.__dict__, "msg": msg, "levelname": record.levelname.lower()})
        return super().format(record)


def _setup_logging() -> None:
    """Warnings from the library (e.g. the engine's fallback) as one line each on stderr."""
    log = logging.getLogger("layercrit")
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_LowerLevelFormatter("layercrit: %(levelname)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every failure the user can act on ends in one line ``layercrit: error: ...``
    and exit status 2; Ctrl-C at any moment (even while PyTorch is still being imported) in one
    line and status 130."""
    args = None
    try:
        args = build_parser().parse_args(argv)
        _setup_logging()
        return args.func(args)
    except LayercritError as e:
        print(f"layercrit: error: {_one_line(with_flags(e, getattr(args, 'flags', None)))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `layercrit zoo list | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("layercrit: interrupted: finished rows are saved; rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as e:  # a disk or permission problem no check above foresaw: still one line, naming the file
        print(f"layercrit: error: {_one_line(os_error(e, e.filename or 'a file', 'read or write'))}", file=sys.stderr)
        return 2
    except MemoryError:
        print("layercrit: error: out of memory: use fewer --samples, a smaller --batch-size or a bigger machine",
              file=sys.stderr)
        return 2


# Python parameters (MeasureConfig, RayOptions, create_model, ...) whose flag is not "--" + the name with
# dashes; a command maps more of its own with set_defaults(flags={field: flag}).
FLAGS = {"address": "--ray-address", "data_mode": "--ray-data", "spec": "--model", "store": "--db",
         "normalize": "--mean R,G,B --std R,G,B, or --normalize none"}


def flag(field: str, flags: dict[str, str] | None = None) -> str:
    """The command-line flag of a Python parameter: the command's own mapping, else FLAGS, else
    ``--`` + the name with dashes (``batch_size`` -> ``--batch-size``; ``--no-data-cache`` for a
    MeasureConfig switch that is on by default)."""
    if flags and field in flags:
        return flags[field]
    if field in FLAGS:
        return FLAGS[field]
    from .options import switched_off  # torch-free

    return "--" + ("no-" if switched_off(field) else "") + field.replace("_", "-")


def with_flags(e: LayercritError, flags: dict[str, str] | None = None) -> str:
    """A library error names Python parameters (``batch_size``); on the command line they are its flags.
    The library never spells a flag itself (tests/test_architecture.py checks): this is the one place."""
    if isinstance(e, NamedFields):
        return e.naming({f: flag(f, flags) for f in e.fields})
    return str(e)


def _one_line(e: BaseException | str) -> str:
    """An error message as one line: whatever a file or a name put into it."""
    return " ".join("".join(c if c.isprintable() else " " for c in str(e)).split())
