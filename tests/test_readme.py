"""Every ```python block of README.md runs as written, in order, like the cells of one notebook.

They run in a fresh folder laid out like a clone of the project next to ``../shared`` (``tests/`` linked in,
``../shared`` linked beside it), so relative paths in the README mean what they mean to a reader at the
project's root, and whatever the snippets write stays in that folder.
"""
from __future__ import annotations

import re

import pytest

from conftest import ROOT, SHARED_DATA

README = ROOT / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks() -> list[str]:
    return BLOCK.findall(README.read_text())


def test_the_readme_has_python_snippets():
    assert len(python_blocks()) >= 2


def test_readme_python_snippets_run(tmp_path, monkeypatch):
    shared = SHARED_DATA.parent
    if not (shared / "data").is_dir() or not (shared / "models").is_dir():
        pytest.skip(f"{shared} is absent (the README's examples read ../shared/data and ../shared/models)")
    clone = tmp_path / "layercrit"
    clone.mkdir()
    (clone / "tests").symlink_to(ROOT / "tests")
    (tmp_path / "shared").symlink_to(shared)
    monkeypatch.chdir(clone)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))  # a snippet may extend sys.path: undone after
    namespace: dict = {"__name__": "__readme__"}
    for i, code in enumerate(python_blocks(), 1):
        try:
            exec(compile(code, f"README.md python block {i}", "exec"), namespace)
        except Exception as e:  # name the block, keep the traceback
            raise AssertionError(f"README.md python block {i} failed: {type(e).__name__}: {e}") from e
    assert (clone / "own.db").is_file() and (clone / "study.db").is_file()
