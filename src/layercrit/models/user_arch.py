"""Architectures from the user's own code: ``path/to/file.py:callable`` or ``package.module:callable``.

Wherever an architecture name is accepted (``--arch``, ``arch:<name>``, ``create_model(arch=...)``), a
reference to a callable in the user's Python code works too. The callable builds a freshly initialized
model: it is called with ``num_classes=N`` when its signature accepts that (a parameter of that name,
or ``**kwargs``), else with no arguments.

Loading a Python file runs it: that is what defining a model in Python means. It is the user's own
code, not a downloaded checkpoint, so it needs no ``--trust-pickle`` (checkpoints stay data-only).

The architecture's identity is the file (as given), the callable and the sha256 of the file's text;
a run records it, so resuming with a changed file is refused like any other change of configuration.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import torch.nn as nn

from ..errors import LayercritError

_IDENT = r"[A-Za-z_]\w*"
_REFERENCE = re.compile(rf"^(?P<where>.+):(?P<attr>{_IDENT}(?:\.{_IDENT})*)$")
_MODULE = re.compile(rf"^{_IDENT}(?:\.{_IDENT})*$")

USAGE = "path/to/file.py:callable or package.module:callable"


@dataclass(frozen=True)
class UserArch:
    """A callable in the user's code that builds the architecture."""

    reference: str  # as given: "models/resnet.py:resnet20" or "mypkg.nets:resnet20"
    file: str  # the Python file, as given (a module: the file it was imported from)
    callable: str
    sha256: str  # of the file's text
    fn: Callable[..., Any]

    @property
    def identity(self) -> dict[str, str]:
        return {"file": self.file, "callable": self.callable, "sha256": self.sha256}

    def accepts_num_classes(self) -> bool:
        params = _parameters(self.fn)
        return params is None or "num_classes" in params or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())

    def default_num_classes(self) -> int | None:
        """The default of its ``num_classes`` parameter, if it has one (an int)."""
        params = _parameters(self.fn)
        p = params.get("num_classes") if params else None
        default = None if p is None else p.default
        return default if isinstance(default, int) and not isinstance(default, bool) else None

    def build(self, num_classes: int | None = None) -> nn.Module:
        """A fresh instance: ``fn(num_classes=N)`` where it accepts that (and N is given), else ``fn()``."""
        takes = self.accepts_num_classes()
        try:
            net = self.fn(num_classes=num_classes) if takes and num_classes is not None else self.fn()
        except LayercritError:
            raise
        except Exception as e:
            call = f"{self.callable}(num_classes={num_classes})" if takes and num_classes is not None \
                else f"{self.callable}()"
            raise LayercritError(f"building the architecture {self.reference} failed: {call} raised "
                                 f"{type(e).__name__}: {_first_line(e)}") from None
        if not isinstance(net, nn.Module):
            raise LayercritError(f"{self.reference} returned a {type(net).__name__}, not a torch.nn.Module: "
                                 "give a function or class that builds the model")
        if num_classes is not None and not takes:
            found = last_linear_classes(net)
            if found is not None and found != num_classes:
                raise LayercritError(f"{self.reference} takes no num_classes argument and builds a {found}-class "
                                     f"model, not {num_classes}: add a num_classes parameter to it, or use "
                                     f"{found} classes")
        return net


def is_user_arch(name: str) -> bool:
    """Whether ``name`` refers to a callable in Python code rather than to a registered architecture."""
    m = _REFERENCE.match(name)
    if m is None:
        return False
    where = m.group("where")
    return where.endswith(".py") or bool(_MODULE.match(where))


_LOADED: dict[tuple[str, str], ModuleType] = {}  # (absolute path, sha256) -> module: each file text runs once


def load_user_arch(reference: str) -> UserArch:
    """Import the file or module ``reference`` names and find its callable (one clear error otherwise)."""
    m = _REFERENCE.match(reference)
    if m is None:
        raise LayercritError(f"'{reference}' is not a reference to Python code: use {USAGE}")
    where, attr = m.group("where"), m.group("attr")
    if where.endswith(".py"):
        module, file, sha = _load_file(where)
    else:
        module, file, sha = _import_module(where, reference)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            found = _callables(module)
            raise LayercritError(f"{file} defines no '{attr}'" + (f": it defines {', '.join(found[:12])}"
                                 + (" ..." if len(found) > 12 else "") if found else "")
                                 + f" (use {USAGE})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise LayercritError(f"{reference}: '{attr}' is a {type(obj).__name__}, not a function or class that "
                             "builds the model")
    return UserArch(reference, file, attr, sha, obj)


def _load_file(where: str) -> tuple[ModuleType, str, str]:
    path = Path(where).expanduser()
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise LayercritError(f"architecture file not found: {where}: check the path (relative to the current "
                             "folder)") from None
    except IsADirectoryError:
        raise LayercritError(f"architecture file {where} is a folder: give the .py file that defines the model") \
            from None
    except OSError as e:
        raise LayercritError(f"cannot read architecture file {where}: {e.strerror or e}") from None
    sha = hashlib.sha256(text).hexdigest()
    key = (str(path.resolve()), sha)
    if key in _LOADED:
        return _LOADED[key], where, sha
    stem = re.sub(r"\W", "_", path.stem) or "arch"
    name = f"layercrit_user_arch_{stem}_{sha[:12]}"  # a distinct module per file text
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LayercritError(f"cannot load {where} as Python code: give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # classes defined there (dataclasses, pickling) look their module up here
    folder = str(path.resolve().parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)  # the file may import its neighbours, as when run as a script
    try:
        spec.loader.exec_module(module)
    except KeyboardInterrupt:
        sys.modules.pop(name, None)
        raise
    except BaseException as e:  # whatever the file raises at import (SystemExit included): one line
        sys.modules.pop(name, None)
        raise LayercritError(f"loading the architecture file {where} failed: {_describe(e)}") from None
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)
    _LOADED[key] = module
    return module, where, sha


def _import_module(where: str, reference: str) -> tuple[ModuleType, str, str]:
    cwd_added = "" not in sys.path and str(Path.cwd()) not in sys.path
    if cwd_added:
        sys.path.insert(0, str(Path.cwd()))  # `package.module` in the current folder, as `python -m` finds it
    try:
        module = importlib.import_module(where)
    except ModuleNotFoundError as e:
        if e.name and where.startswith(e.name):
            raise LayercritError(f"no Python module '{where}' for the architecture {reference}: install it, run "
                                 "from the folder that holds it, or give the file: path/to/file.py:callable") \
                from None
        raise LayercritError(f"importing {where} for the architecture {reference} failed: {_describe(e)}") from None
    except Exception as e:
        raise LayercritError(f"importing {where} for the architecture {reference} failed: {_describe(e)}") from None
    finally:
        if cwd_added:
            sys.path.remove(str(Path.cwd()))
    file = getattr(module, "__file__", None)
    if not file:
        raise LayercritError(f"{where} is not a module with a Python file (a namespace package?): name the module "
                             "that defines the callable")
    sha = hashlib.sha256(Path(file).read_bytes()).hexdigest()
    return module, file, sha


def _parameters(fn: Callable[..., Any]) -> dict[str, inspect.Parameter] | None:
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # no signature to read (some builtins): assume it takes keywords
        return None


def _callables(module: ModuleType) -> list[str]:
    own = getattr(module, "__name__", "")
    return sorted(n for n, v in vars(module).items() if not n.startswith("_") and callable(v)
                  and getattr(v, "__module__", None) == own)


def last_linear_classes(net: nn.Module) -> int | None:
    """Output count of the last ``nn.Linear`` (in registration order), or None if there is none."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


def _describe(e: BaseException) -> str:
    if isinstance(e, SyntaxError):
        return f"SyntaxError: {e.msg} (line {e.lineno})"
    return f"{type(e).__name__}: {_first_line(e)}"


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else type(e).__name__
