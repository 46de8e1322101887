"""Command line: a thin layer over the Python API (``layercrit.measure``, ``layercrit.export``, ...).

Each command group lives in its own module here with ``register(subparsers)``, which adds
its parser(s) and sets ``func`` (called with the parsed args; returns an exit status).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import LayercritError

# Command modules, in the order their commands appear in --help.
COMMAND_MODULES = ["measure"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="layercrit", description="Layer criticality of vision models.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LayercritError as e:
        print(f"layercrit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("layercrit: interrupted: finished rows are saved; rerun the same command to resume", file=sys.stderr)
        return 130

