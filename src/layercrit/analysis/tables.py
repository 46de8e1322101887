"""The study's tables from long measurement rows: per layer, per model, per category, per stage.

Every function takes and returns DataFrames (criticality in percent); nothing here plots.
Standard deviations are pandas' sample std (ddof=1): over trials for a layer, over layers
for a model, over models for a category or a heatmap column.
"""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from .layers import ordered_stages


def layer_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (model, layer): criticality mean and std over trials, top-1 after the reset, recovered accuracy."""
    g = rows.groupby(["model_id", "layer"], sort=False)
    return g.agg(criticality=("criticality", "mean"), criticality_std=("criticality", "std"),
                 top1_acc=("top1_acc", "mean"), recovered_acc=("recovered_acc", "mean"),
                 n_trials=("trial", "nunique")).reset_index()


def criticality_matrix(layers: pd.DataFrame, models: Sequence[str], order: Sequence[str],
                       value: str = "criticality", column: str = "layer") -> pd.DataFrame:
    """Models (rows, in ``models`` order) x layers (columns, in ``order``) of one layer_table column;
    ``column`` names the layer key (``column`` when architectures share layer names)."""
    m = layers.pivot(index="model_id", columns=column, values=value)
    return m.reindex(index=list(models), columns=list(order))


def delta_matrix(matrix: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Each row minus the baseline's row (percentage points, -100..100)."""
    return matrix - matrix.loc[baseline]


def model_table(layers: pd.DataFrame, models: pd.DataFrame) -> pd.DataFrame:
    """One row per model (in ``models`` order, which carries the metadata): average criticality
    (mean over layers of the layer criticalities), its std over layers, layer and trial counts."""
    g = layers.groupby("model_id", sort=False)
    stats = g.agg(avg_criticality=("criticality", "mean"), std_criticality=("criticality", "std"),
                  n_layers=("layer", "nunique"), n_trials=("n_trials", "max"))
    return models.set_index("model_id").join(stats, how="left").reset_index()


def category_table(models: pd.DataFrame) -> pd.DataFrame:
    """Per category (in order of first appearance): mean and std over its models' average criticality, n."""
    g = models.groupby("category", sort=False)["avg_criticality"]
    return g.agg(mean="mean", std="std", n="count").reset_index()


def stage_table(layers: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    """Models (rows) x network stages (stem, stage 1..N, head, other): mean criticality of the stage's layers.

    ``layers`` is a layer table with a ``stage`` column (each model's stages of its own architecture)."""
    table = layers.pivot_table(index="model_id", columns="stage", values="criticality", aggfunc="mean")
    table = table.reindex(index=list(models), columns=ordered_stages(layers["stage"]))
    table.columns.name = None
    return table


def category_stage_table(stages: pd.DataFrame, models: pd.DataFrame) -> pd.DataFrame:
    """Categories (rows) x stages: the mean over the category's models of their stage means."""
    category = models.set_index("model_id")["category"]
    table = stages.groupby(category.reindex(stages.index).to_numpy(), sort=False).mean()
    table.index.name = "category"
    return table
