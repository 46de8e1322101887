"""Training trajectories: each stage's mean value (and the average) against epoch or clean accuracy, one
line per (variant, seed), one panel per stage; the final models of single-epoch runs as points."""
from __future__ import annotations

import math

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from ..analysis.lab import AVG, stage_columns

X_LABELS = {"epoch": "epoch (log scale)", "clean_test_acc": "clean top-1 [%]"}


def trajectory_figure(table: pd.DataFrame, x: str, what: str) -> Figure:
    """``table``: a lab table; ``x``: "epoch" or "clean_test_acc"; ``what``: the metric's name for labels."""
    panels = [AVG, *stage_columns(table)]
    cols = 4
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(3.3 * cols, 2.7 * rows + 0.9))
    axes = fig.subplots(rows, cols, squeeze=False)
    variants = list(dict.fromkeys(table["variant"]))
    palette = dict(zip(variants, sns.color_palette("tab10" if len(variants) <= 10 else "husl", len(variants))))
    seeds = sorted(table["seed"].dropna().unique())
    styles = dict(zip(seeds, ["-", "--", ":", "-."] * (len(seeds) // 4 + 1)))
    for ax, panel in zip(axes.flat, panels):
        for (variant, seed), group in table.groupby(["variant", "seed"], sort=False, dropna=False):
            group = group.sort_values("epoch")
            label = variant if pd.isna(seed) else f"{variant} (seed {int(seed)})"  # a given model has no seed
            if len(group) > 1:
                ax.plot(group[x], group[panel], styles.get(seed, "-"), marker="o", markersize=3.5, linewidth=1.3,
                        color=palette[variant], label=label)
            else:
                ax.plot(group[x], group[panel], marker="D", markersize=5, linestyle="none", color=palette[variant],
                        label=label)
        ax.set_title("average over layers" if panel == AVG else panel, fontsize=9)
        if x == "epoch":
            ax.set_xscale("log")
        ax.grid(True, color="#eeeeee", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel(X_LABELS[x], fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{what} [%]", fontsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=7, frameon=False)
    against = "epoch" if x == "epoch" else "clean accuracy"
    fig.suptitle(f"Mean layer {what} per stage against {against} (lines: a run's checkpoints)", fontsize=11)
    fig.subplots_adjust(left=0.06, right=0.98, top=0.9, bottom=0.1 + 0.03 * math.ceil(len(labels) / 5),
                        hspace=0.45, wspace=0.25)
    return fig
