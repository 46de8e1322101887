"""Where layercrit keeps downloaded checkpoints and decoded evaluation data."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$LAYERCRIT_CACHE`` (default ``~/.cache/layercrit``), joined with ``parts``."""
    root = os.environ.get("LAYERCRIT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "layercrit"
    return Path(root, *parts)
