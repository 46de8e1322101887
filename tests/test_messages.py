"""One way to name an option in a message: the library names Python parameters, the CLI alone its flags.

The rule (layercrit.errors): outside ``src/layercrit/cli`` no string literal spells a command-line flag
(``--db``, ``--samples``); a message about an option raises ``ConfigError("... {field} ...")`` with the
Python parameter name, which the CLI renders as its flag. Not messages, so not checked: docstrings and
comments (prose for readers of the code), a command quoted in backticks (`` `ray start --head` ``: a command
line, possibly another program's), and a string that is a single argument (``"--format=%H"`` in an argument
list for git).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "layercrit"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
QUOTED = re.compile(r"`[^`]*`")  # a command line quoted as code
ARGUMENT = re.compile(r"--[a-z][a-z0-9-]*(=.*)?")  # a string that is one command-line argument


def _flags(text: str) -> list[str]:
    if ARGUMENT.fullmatch(text):
        return []
    return FLAG.findall(QUOTED.sub("", text))


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (of modules, classes, functions)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                out.add(id(first.value))
    return out


def flags_in_messages(path: Path) -> list[str]:
    """``file:line: --flag`` for every flag spelled in a string literal of ``path`` (docstrings excepted)."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            for flag in _flags(node.value):
                found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {flag}")
    return found


LIBRARY = sorted(p for p in ROOT.rglob("*.py") if "cli" not in p.relative_to(ROOT).parts)


@pytest.mark.parametrize("path", LIBRARY, ids=[str(p.relative_to(ROOT)) for p in LIBRARY])
def test_library_messages_name_no_flag(path):
    found = flags_in_messages(path)
    assert not found, ("a library message names command-line flags; raise ConfigError('... {field} ...') with the "
                       "Python parameter instead (the CLI renders it as the flag):\n" + "\n".join(found))


def test_the_check_sees_flags(tmp_path):
    """The scanner itself: a flag in a message is found, one in a docstring or comment is not."""
    f = tmp_path / "m.py"
    f.write_text('"""Use --db."""\n# --out\ndef g():\n    """--device"""\n    raise E(f"give --batch-size {x}")\n'
                 'X = "a -- b, x--y, {batch_size}, `ray start --head`"\nrun(["git", "log", "--format=%H"])\n')
    assert [s.split(": ", 1)[1] for s in flags_in_messages_at(f)] == ["--batch-size"]


def flags_in_messages_at(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    skip = _docstrings(tree)
    return [f"{node.lineno}: {flag}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
            for flag in _flags(node.value)]
