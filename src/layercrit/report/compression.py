"""Accuracy against speed-up of compressed models, per model and rule."""
from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from ..analysis.compression import RULE_ORDER

MARKERS = {"criticality": "o", "magnitude": "s", "random": "^"}


def compression_figure(table: pd.DataFrame, speed: str = "speedup_b64") -> Figure:
    """One panel per model: test top-1 (filled: after fine-tuning, hollow: before) against the
    measured speed-up, one colour per rule; every random seed is its own point."""
    models = list(dict.fromkeys(table["model_id"]))
    fig = Figure(figsize=(4.2 * len(models) + 1.6, 4.2))
    rules = [r for r in RULE_ORDER if r in set(table["rule"])]
    colors = dict(zip(rules, sns.color_palette("tab10", len(rules))))
    for i, model in enumerate(models):
        ax = fig.add_subplot(1, len(models), i + 1)
        t = table[table["model_id"] == model]
        ax.axhline(t["base_top1_acc"].iloc[0], color="0.6", lw=0.8, ls="--")
        ax.plot([1.0], [t["base_top1_acc"].iloc[0]], marker="*", color="0.3", ms=10, ls="none")
        for rule in rules:
            r = t[t["rule"] == rule]
            ax.scatter(r[speed], r["top1_acc"], facecolors="none", edgecolors=[colors[rule]],
                       marker=MARKERS.get(rule, "o"), s=36)
            if r["finetuned_top1_acc"].notna().any():
                ax.scatter(r[speed], r["finetuned_top1_acc"], color=colors[rule], marker=MARKERS.get(rule, "o"),
                           s=36, label=rule)
            else:
                ax.scatter([], [], color=colors[rule], marker=MARKERS.get(rule, "o"), label=rule)
        ax.set_title(model, fontsize=10)
        ax.set_xlabel(f"measured speed-up ({'batch 64' if speed.endswith('64') else 'batch 1'}, CPU)")
        if i == 0:
            ax.set_ylabel("test top-1 [%]")
        ax.grid(alpha=0.3)
    fig.axes[-1].legend(title="rule (filled: fine-tuned,\nhollow: before)", loc="upper left",
                        bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=8, title_fontsize=8)
    fig.subplots_adjust(left=0.07, right=0.84, bottom=0.16, top=0.9, wspace=0.25)
    return fig
