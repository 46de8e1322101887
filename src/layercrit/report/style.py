"""Colours shared by the figures and the interactive page, so both read the same; how figures are saved."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import matplotlib
import matplotlib.colors as mcolors
import numpy as np
import seaborn as sns

from ..analysis.layers import ordered_stages

CRITICALITY_CMAP = "rocket_r"  # 0 % light, 100 % dark
DELTA_CMAP = "vlag"  # diverging: blue = less critical than the baseline, red = more
STD_CMAP = "mako_r"
MISSING_COLOR = "#e6e6e6"  # a layer a model was not measured on
UNCATEGORIZED_COLOR = "#9a9a9a"


def plain_text():
    """A context in which matplotlib draws every string as it is (no mathtext: user-supplied names
    such as '$\\undefinedcmd{x}$' are shown, not parsed)."""
    return matplotlib.rc_context({"text.parse_math": False, "text.usetex": False})


def colormap(name: str) -> mcolors.Colormap:
    return sns.color_palette(name, as_cmap=True)


def colormap_stops(name: str, n: int = 33) -> list[str]:
    """``n`` evenly spaced colours of a colormap, for the page's linear interpolation."""
    cmap = colormap(name)
    return [mcolors.to_hex(cmap(x)) for x in np.linspace(0, 1, n)]


def category_colors(categories: Sequence[str], uncategorized: str = "uncategorized") -> dict[str, str]:
    """A distinct colour per category, in the given order; 'uncategorized' grey."""
    named = [c for c in dict.fromkeys(categories) if c != uncategorized]
    palette = sns.color_palette("tab10" if len(named) <= 10 else "husl", max(len(named), 1))
    colors = {c: mcolors.to_hex(p) for c, p in zip(named, palette)}
    if uncategorized in categories:
        colors[uncategorized] = UNCATEGORIZED_COLOR
    return colors


def stage_colors(stages: Iterable[str]) -> dict[str, str]:
    """A colour per network stage, in network order (matplotlib's C0, C1, ...), for bars coloured by stage."""
    return {st: f"C{i % 10}" for i, st in enumerate(ordered_stages(stages))}


def mean_std(values) -> str:
    """'12.3 ± 4.5' (just the mean where the std is undefined, e.g. one value)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def undated(ext: str) -> dict:
    """savefig options for ``ext`` that leave out the creation date (written into PDFs by default), so the same
    results rewrite identical files (diff-able in version control)."""
    return {"metadata": {"CreationDate": None}} if ext == "pdf" else {}


def save_figure(fig, folder, stem: str, dpi: int) -> list[str]:
    """``stem``.png and ``stem``.pdf in ``folder`` (undated); returns their names."""
    fig.savefig(folder / f"{stem}.png", dpi=dpi, facecolor="white")
    fig.savefig(folder / f"{stem}.pdf", facecolor="white", **undated("pdf"))
    return [f"{stem}.png", f"{stem}.pdf"]
