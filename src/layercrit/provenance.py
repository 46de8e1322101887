"""Where a result came from: package versions and the git commit, recorded by every run that writes one."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path

from . import __version__


def package_versions() -> dict[str, str]:
    """Versions of layercrit, torch, torchvision, timm and Python."""
    import timm  # here, not at the top: the git helpers below serve torch-free callers (the report)
    import torch
    import torchvision

    return {"layercrit": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__, "python": platform.python_version()}


def git_commit() -> str | None:
    """The commit of the layercrit checkout this code runs from, or None outside a git checkout."""
    return _git(["rev-parse", "HEAD"], Path(__file__).resolve().parent)


def _git(args: list[str], cwd: Path) -> str | None:
    """git's output (stripped), or None where git or the repository is missing or the command fails."""
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def first_commit(path: str | Path) -> tuple[str, str] | None:
    """(sha, committer time ISO 8601) of the commit that added ``path`` to its git repository; None where the
    file is not committed (or there is no git)."""
    path = Path(path).resolve()
    out = _git(["log", "--diff-filter=A", "--format=%H %cI", "--", path.name], path.parent)
    if not out:
        return None
    sha, when = out.splitlines()[-1].split()
    return sha, when


def is_ancestor(older: str, newer: str, repo: str | Path) -> bool | None:
    """Whether commit ``older`` is ``newer`` or one of its ancestors (None where git cannot tell)."""
    try:
        out = subprocess.run(["git", "merge-base", "--is-ancestor", older, newer], cwd=Path(repo).resolve(),
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return {0: True, 1: False}.get(out.returncode)
