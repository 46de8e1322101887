"""The study's main figure: models x layers, grouped by category, with row and column mean +/- std."""
from __future__ import annotations

import textwrap
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .style import MISSING_COLOR, colormap, mean_std

FONT = 6.5  # pt
CHAR_W = FONT * 0.6 / 72  # inches per character, generous for DejaVu Sans
MARGIN = 0.12


def heatmap_figure(matrix: pd.DataFrame, *, row_labels: Sequence[str], col_labels: Sequence[str],
                   categories: Sequence[str], colors: dict[str, str], cmap: str, vmin: float, vmax: float,
                   title: str, cbar_label: str, center: float | None = None) -> Figure:
    """``matrix``: models (rows, display order) x layers (columns, network order).

    The layout is computed in inches from the label lengths, so nothing overlaps whatever the
    number of models and layers.
    """
    n_rows, n_cols = matrix.shape
    cell_w = float(np.clip(3.0 / n_cols, 0.19, 0.5))
    cell_h = float(np.clip(1.8 / n_rows, 0.19, 0.4))
    heat_w, heat_h = n_cols * cell_w, n_rows * cell_h
    cat_w = 1.05  # category names, wrapped
    band_w = 0.12
    label_w = max(len(s) for s in row_labels) * CHAR_W + 0.12
    stats_w = 0.8  # row mean +/- std
    cbar_w, cbar_label_w = 0.13, 0.6
    col_label_h = max(len(s) for s in col_labels) * CHAR_W + 0.12
    top_stats_h, title_h = 0.72, 0.42

    width = MARGIN + cat_w + band_w + 0.06 + label_w + heat_w + stats_w + cbar_w + cbar_label_w + MARGIN
    height = MARGIN + col_label_h + heat_h + top_stats_h + title_h
    fig = Figure(figsize=(width, height))

    def axes(x, y, w, h):
        return fig.add_axes((x / width, y / height, w / width, h / height))

    heat_x = MARGIN + cat_w + band_w + 0.06 + label_w
    heat_y = MARGIN + col_label_h
    ax = axes(heat_x, heat_y, heat_w, heat_h)
    cax = axes(heat_x + heat_w + stats_w, heat_y, cbar_w, heat_h)
    band = axes(MARGIN + cat_w, heat_y, band_w, heat_h)

    ax.set_facecolor(MISSING_COLOR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # seaborn 0.13's own use of Colormap.set_bad
        sns.heatmap(matrix.to_numpy(dtype=float), ax=ax, cbar_ax=cax, cmap=colormap(cmap), vmin=vmin, vmax=vmax,
                    center=center, xticklabels=list(col_labels), yticklabels=list(row_labels),
                    linewidths=0.25, linecolor="white", cbar_kws={"label": cbar_label})
    ax.tick_params(axis="both", length=0, labelsize=FONT, pad=2)
    ax.set_xticklabels(col_labels, rotation=90)
    ax.set_yticklabels(row_labels, rotation=0)
    cax.tick_params(labelsize=FONT)
    cax.yaxis.label.set_size(FONT + 1)

    values = matrix.to_numpy(dtype=float)
    for i in range(n_rows):  # row mean +/- std over layers, right of the row
        ax.text(n_cols + 0.25, i + 0.5, mean_std(values[i]), va="center", ha="left", fontsize=FONT, clip_on=False)
    for j in range(n_cols):  # column mean +/- std over models, above the column
        ax.text(j + 0.5, -0.2, mean_std(values[:, j]), va="bottom", ha="center", rotation=90, fontsize=FONT,
                clip_on=False)
    ax.text(n_cols + 0.25, -0.2, "mean ± std", va="bottom", ha="left", fontsize=FONT, style="italic",
            clip_on=False)

    _category_bands(ax, band, list(categories), colors, cell_h)
    fig.suptitle(title, x=(heat_x + heat_w / 2) / width, y=1 - 0.1 / height, va="top", fontsize=FONT + 3)
    return fig


def _category_bands(ax, band, categories: list[str], colors: dict[str, str], cell_h: float) -> None:
    """A coloured band per run of equal categories, its name beside it, and a white rule between runs."""
    n = len(categories)
    band.set_xlim(0, 1)
    band.set_ylim(n, 0)
    band.axis("off")
    start = 0
    for i in range(1, n + 1):
        if i < n and categories[i] == categories[start]:
            continue
        name = categories[start]
        band.add_patch(Rectangle((0, start), 1, i - start, facecolor=colors.get(name, "#999999"),
                                 edgecolor="white", linewidth=0.8))
        # text lines that fit the run's height; two may spill a little into the (white) rule and neighbour
        lines = max(2, int((i - start) * cell_h / (FONT * 1.25 / 72)))
        text = textwrap.fill(name, 17)
        if text.count("\n") + 1 > lines:  # too tall for a short run: one line, shortened
            text = textwrap.shorten(name, 18, placeholder="…")
        band.text(-0.35, (start + i) / 2, text, ha="right", va="center", fontsize=FONT, fontweight="bold",
                  color="#222222", linespacing=1.0)
        if start > 0:
            ax.axhline(start, color="white", linewidth=2.2)
        start = i
