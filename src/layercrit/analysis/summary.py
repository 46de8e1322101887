"""The study's numbers as one JSON-ready dict (``summary.json``); NaN and Inf become null."""
from __future__ import annotations

import math

import pandas as pd

from .results import Results


def summary(study: Results) -> dict:
    """``{"models": ..., "categories": ..., "correlations": ..., "baseline": id}``, criticality in percent."""
    stages = study.stage_stats
    models = {}
    for row in study.model_stats.itertuples(index=False):
        models[row.model_id] = {
            "category": row.category, "display_name": row.display_name, "accuracy": row.accuracy,
            "epsilon": row.epsilon, "norm": row.norm, "arch": row.arch,
            "avg_criticality": row.avg_criticality, "std_criticality": row.std_criticality,
            "n_layers": row.n_layers, "n_trials": row.n_trials,
            "nonfinite_rows": study.nonfinite.get(row.model_id, 0),
            "stages": stages.loc[row.model_id].to_dict(),
        }
    categories = {row.category: {"mean": row.mean, "std": row.std, "n": row.n}
                  for row in study.category_stats.itertuples(index=False)}
    return clean({"models": models, "categories": categories, "correlations": study.correlations(),
                  "baseline": study.baseline, "reset": study.reset, "metric": study.metric,
                  "layers": study.layer_names,
                  "architectures": {a: list(g["layer"]) for a, g in study.layers.groupby("arch", sort=False)}})


def clean(value):
    """Plain JSON types: numpy scalars to Python, NaN/NA to None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value
