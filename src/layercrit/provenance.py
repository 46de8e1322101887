"""Where a result came from: package versions and the git commit, recorded by every run that writes one."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import timm
import torch
import torchvision

from . import __version__


def package_versions() -> dict[str, str]:
    """Versions of layercrit, torch, torchvision, timm and Python."""
    return {"layercrit": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__, "python": platform.python_version()}


def git_commit() -> str | None:
    """The commit of the layercrit checkout this code runs from, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None
