"""Name selection by fnmatch globs with ``!`` excludes (``--layers``, ``report --only``): a leaf module."""
from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from .errors import LayercritError


def select_names(names: Sequence[str], patterns: Sequence[str], *, what: str, hint: str) -> list[str]:
    """The names (in their order) that match any include pattern (all names where there is none) and no
    ``!``-prefixed exclude pattern. A pattern that matches no name is an error: a typo must not silently
    select nothing (or everything). ``what`` names the kind ("layer"), ``hint`` says how to list them."""
    includes = [p for p in patterns if not p.startswith("!")]
    excludes = [p[1:] for p in patterns if p.startswith("!")]
    for p in includes + excludes:
        if not any(fnmatch.fnmatchcase(n, p) for n in names):
            raise LayercritError(f"{what} pattern '{p}' matches no {what}: {hint}")
    kept = [n for n in names if not includes or any(fnmatch.fnmatchcase(n, p) for p in includes)]
    return [n for n in kept if not any(fnmatch.fnmatchcase(n, p) for p in excludes)]
