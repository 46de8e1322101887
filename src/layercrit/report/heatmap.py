"""The study's main figure: models x layers, grouped by category, with row and column mean +/- std;
one panel per architecture when a report holds models of different layouts."""
from __future__ import annotations

import textwrap
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .style import MISSING_COLOR, colormap, mean_std

FONT = 6.5  # pt
CHAR_W = FONT * 0.6 / 72  # inches per character, generous for DejaVu Sans
MARGIN = 0.12


@dataclass
class Panel:
    """One architecture's block of the heatmap: its models (rows, display order) x its layers (forward order)."""

    matrix: pd.DataFrame
    row_labels: Sequence[str]
    col_labels: Sequence[str]
    categories: Sequence[str]
    title: str | None = None  # the architecture, shown when a report holds several


def heatmap_figure(panels: Sequence[Panel], *, colors: dict[str, str], cmap: str, vmin: float, vmax: float,
                   title: str, cbar_label: str, center: float | None = None) -> Figure:
    """Models x layers heatmaps, one panel per architecture, stacked top to bottom.

    The layout is computed in inches from the label lengths, so nothing overlaps whatever the
    number of models and layers; every panel has its own column labels and column statistics.
    """
    n_cols_max = max(p.matrix.shape[1] for p in panels)
    n_rows_all = sum(p.matrix.shape[0] for p in panels)
    cell_w = float(np.clip(3.0 / n_cols_max, 0.19, 0.5))
    cell_h = float(np.clip(1.8 / n_rows_all, 0.19, 0.4))
    cat_w, band_w = 1.05, 0.12  # category names (wrapped), the coloured band
    label_w = max(len(s) for p in panels for s in p.row_labels) * CHAR_W + 0.12
    stats_w = 0.8  # row mean +/- std
    cbar_w, cbar_label_w = 0.13, 0.6
    top_stats_h, title_h, panel_title_h, gap = 0.72, 0.42, 0.3, 0.15

    def col_label_h(p: Panel) -> float:
        return max(len(s) for s in p.col_labels) * CHAR_W + 0.12

    def block_h(p: Panel) -> float:
        return col_label_h(p) + p.matrix.shape[0] * cell_h + top_stats_h + (panel_title_h if p.title else 0.0)

    heat_x = MARGIN + cat_w + band_w + 0.06 + label_w
    width = heat_x + n_cols_max * cell_w + stats_w + cbar_w + cbar_label_w + MARGIN
    height = MARGIN + sum(block_h(p) for p in panels) + gap * (len(panels) - 1) + title_h
    fig = Figure(figsize=(width, height))

    def axes(x, y, w, h):
        return fig.add_axes((x / width, y / height, w / width, h / height))

    y = MARGIN
    for panel in reversed(panels):  # bottom to top
        n_rows, n_cols = panel.matrix.shape
        heat_w, heat_h = n_cols * cell_w, n_rows * cell_h
        heat_y = y + col_label_h(panel)
        ax = axes(heat_x, heat_y, heat_w, heat_h)
        cax = axes(heat_x + heat_w + stats_w, heat_y, cbar_w, heat_h)
        band = axes(MARGIN + cat_w, heat_y, band_w, heat_h)
        _draw_panel(ax, cax, panel, cmap=cmap, vmin=vmin, vmax=vmax, center=center, cbar_label=cbar_label)
        _category_bands(ax, band, list(panel.categories), colors, cell_h)
        if panel.title:
            fig.text(heat_x / width, (heat_y + heat_h + top_stats_h + 0.04) / height, panel.title,
                     ha="left", va="bottom", fontsize=FONT + 2, fontweight="bold")
        y += block_h(panel) + gap
    fig.suptitle(title, x=(heat_x + n_cols_max * cell_w / 2) / width, y=1 - 0.1 / height, va="top",
                 fontsize=FONT + 3)
    return fig


def _draw_panel(ax, cax, panel: Panel, *, cmap: str, vmin: float, vmax: float, center: float | None,
                cbar_label: str) -> None:
    """The cells, their labels, and the mean +/- std of each row (right) and column (above)."""
    matrix = panel.matrix
    n_rows, n_cols = matrix.shape
    ax.set_facecolor(MISSING_COLOR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # seaborn 0.13's own use of Colormap.set_bad
        sns.heatmap(matrix.to_numpy(dtype=float), ax=ax, cbar_ax=cax, cmap=colormap(cmap), vmin=vmin, vmax=vmax,
                    center=center, xticklabels=list(panel.col_labels), yticklabels=list(panel.row_labels),
                    linewidths=0.25, linecolor="white", cbar_kws={"label": cbar_label})
    ax.tick_params(axis="both", length=0, labelsize=FONT, pad=2)
    ax.set_xticklabels(panel.col_labels, rotation=90)
    ax.set_yticklabels(panel.row_labels, rotation=0)
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
