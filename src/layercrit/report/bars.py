"""A one-model report's main figure: criticality per layer in forward order, with the spread over trials."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .style import stage_colors

FONT = 7  # pt


def layer_bar_figure(layer_stats: pd.DataFrame, title: str) -> Figure:
    """``layer_stats``: one model's layer table (label, stage, position, criticality, criticality_std, n_trials)."""
    rows = layer_stats.sort_values("position")
    n = len(rows)
    plot_w = float(np.clip(0.16 * n, 3.0, 14.0))
    left, right, top = 0.75, 1.45, 0.45  # inches: y label, legend, title
    bottom = max(len(str(s)) for s in rows["label"]) * FONT * 0.62 / 72 + 0.25  # rotated tick labels
    width, height = left + plot_w + right, bottom + 2.8 + top
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((left / width, bottom / height, plot_w / width, 2.8 / height))
    palette = stage_colors(rows["stage"])
    stages = list(palette)
    x = np.arange(n)
    spread = rows["criticality_std"].fillna(0.0).to_numpy() if rows["n_trials"].max() > 1 else None
    ax.bar(x, rows["criticality"].to_numpy(dtype=float), color=[palette[s] for s in rows["stage"]],
           yerr=spread, error_kw={"elinewidth": 0.7, "capsize": 1.5, "ecolor": "#333333"})
    ax.set_xticks(x, list(rows["label"]), rotation=90, fontsize=FONT)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylim(0, max(1.0, float(np.nanmax((rows["criticality"] + rows["criticality_std"].fillna(0)).to_numpy()))
                       * 1.08))
    ax.set_ylabel("criticality [%]")
    ax.grid(True, axis="y", color="#eeeeee", linewidth=0.6)
    ax.set_axisbelow(True)
    trials = int(rows["n_trials"].max())
    ax.set_title(f"{title}: criticality per layer ({'one trial' if trials == 1 else f'mean ± std over {trials} trials'})",
                 fontsize=10)
    handles = [ax.bar([np.nan], [np.nan], color=palette[s], label=s) for s in stages]
    ax.legend(handles=handles, title="stage", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              fontsize=FONT + 1, title_fontsize=FONT + 2)
    return fig
