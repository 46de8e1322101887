"""Average criticality against accuracy (with rank correlations) and against the training epsilon."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

LABEL_POINTS_UP_TO = 12  # name the points of small studies; 50 names would only hide the points


def correlation_lines(correlations: dict) -> list[str]:
    """One line per subset: 'all models (n=50): Spearman ρ = -0.52 (p = 1e-04), Kendall τ = ...'."""
    lines = []
    for subset, c in correlations.items():
        label = "all models" if subset == "all" else subset.replace("_", " ", 1)
        rho, tau = c["spearman"]["rho"], c["kendall"]["tau"]
        if rho is None or (isinstance(rho, float) and math.isnan(rho)):
            lines.append(f"{label} (n={c['n']}): too few models with an accuracy for a rank correlation")
            continue
        lines.append(f"{label} (n={c['n']}): Spearman ρ = {rho:+.3f} (p = {c['spearman']['p']:.2g}), "
                     f"Kendall τ = {tau:+.3f} (p = {c['kendall']['p']:.2g})")
    return lines


def accuracy_figure(models: pd.DataFrame, correlations: dict, colors: dict[str, str]) -> Figure:
    """``models``: a model table (accuracy, avg_criticality, category, display_name)."""
    fig = Figure(figsize=(8.2, 5.4))
    ax = fig.add_axes((0.09, 0.25, 0.56, 0.66))
    data = models.dropna(subset=["accuracy", "avg_criticality"])
    if data.empty:
        ax.text(0.5, 0.5, "no model has an accuracy:\ngive them one in a metadata CSV", ha="center", va="center",
                transform=ax.transAxes)
    else:
        order = [c for c in colors if c in set(data["category"])]
        sns.scatterplot(data=data, x="accuracy", y="avg_criticality", hue="category", hue_order=order,
                        palette=colors, s=46, edgecolor="white", linewidth=0.6, ax=ax)
        ax.legend(title="category", loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=8,
                  title_fontsize=9)
        if len(data) <= LABEL_POINTS_UP_TO:
            for row in data.itertuples(index=False):
                ax.annotate(row.display_name, (row.accuracy, row.avg_criticality), xytext=(4, 3),
                            textcoords="offset points", fontsize=7, color="#333333")
    ax.set_xlabel("accuracy [%]")
    ax.set_ylabel("average criticality [%]")
    ax.grid(True, color="#eeeeee", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.set_title("Average criticality vs accuracy", fontsize=11)
    fig.text(0.09, 0.04, "\n".join(correlation_lines(correlations)), fontsize=8, va="bottom", ha="left",
             family="DejaVu Sans")
    return fig


def epsilon_figure(models: pd.DataFrame, baseline: str) -> Figure:
    """Adversarially trained models (those with an epsilon): average criticality vs epsilon, one line per norm."""
    fig = Figure(figsize=(6.6, 4.4))
    ax = fig.add_axes((0.11, 0.13, 0.62, 0.76))
    adv = models.dropna(subset=["epsilon", "avg_criticality"]).copy()
    if adv.empty:
        ax.text(0.5, 0.5, "no model has a training epsilon:\ngive adversarially trained models one\n"
                "(columns epsilon, norm) in a metadata CSV", ha="center", va="center", transform=ax.transAxes)
    else:
        adv["norm"] = adv["norm"].fillna("norm unknown").astype(str)
        sns.lineplot(data=adv.sort_values("epsilon"), x="epsilon", y="avg_criticality", hue="norm", style="norm",
                     markers=True, dashes=False, markersize=7, ax=ax)
        positive = adv.loc[adv["epsilon"] > 0, "epsilon"]
        if len(positive) and positive.max() / positive.min() > 20:  # budgets span decades; 0 must stay visible
            low = float(positive.min())
            ax.set_xscale("symlog", linthresh=low)
            ax.set_xlim(-0.4 * low if (adv["epsilon"] <= 0).any() else 0.6 * low, float(positive.max()) * 1.6)
        ax.legend(title="norm", loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=8)
    base = models.loc[models["model_id"] == baseline, "avg_criticality"]
    if len(base) and not np.isnan(base.iloc[0]):
        ax.axhline(base.iloc[0], color="#555555", linestyle="--", linewidth=1)
        ax.annotate(f"baseline ({baseline})", (0.01, base.iloc[0]), xycoords=("axes fraction", "data"),
                    xytext=(0, 3), textcoords="offset points", fontsize=7, color="#555555")
    ax.set_xlabel("training budget ε")
    ax.set_ylabel("average criticality [%]")
    ax.grid(True, color="#eeeeee", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.set_title("Adversarial training: criticality vs ε", fontsize=11)
    return fig
