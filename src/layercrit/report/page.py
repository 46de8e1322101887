"""index.html: one self-contained interactive page (template, CSS, JS and data inlined; no network)."""
from __future__ import annotations

import html
import json
import math
from datetime import datetime, timezone
from importlib import resources

import numpy as np
import pandas as pd

from .. import __version__
from ..analysis import Results
from ..analysis.summary import clean
from . import style
from .scatter import correlation_lines


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


def _rows(frame: pd.DataFrame) -> list[list]:
    return frame.to_numpy(dtype=float).tolist()


def std_limit(std: pd.DataFrame) -> float:
    """Upper end of the std colour scale: the largest std, rounded up (at least 1 %)."""
    top = np.nanmax(std.to_numpy(dtype=float)) if std.notna().to_numpy().any() else 0.0
    return float(max(1.0, math.ceil(top)))


def _layer_records(study: Results) -> list[dict]:
    """The page's columns: each architecture's layers in its own order, group after group; with several
    architectures each label names its group."""
    layers = study.layers
    labels = layers["label"] if len(study.archs) == 1 else layers["arch"] + " · " + layers["label"]
    return [{"name": n, "label": lab, "stage": st, "arch": a}
            for n, lab, st, a in zip(layers["layer"], labels, layers["stage"], layers["arch"])]


def page_data(study: Results, colors: dict[str, str]) -> dict:
    """Everything the page shows, as plain JSON types (rows in the report's model order)."""
    stats = study.model_stats
    std = study.matrix("criticality_std")
    stages, cat_stages = study.stage_stats, study.category_stage_stats
    counts = study.models["category"].value_counts()
    merged = study.models.set_index("model_id")
    runs = study.runs.set_index("model_id").reindex(study.model_ids).reset_index()
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return clean({
        "subtitle": f"{len(study.model_ids)} models × {len(study.layer_names)} layers · {study.metric_label} · "
                    f"reset: {study.reset} · "
                    f"baseline: {study.baseline} · generated {generated} by layercrit {__version__}",
        "baseline": study.baseline,
        "layers": _layer_records(study),
        "models": [{"id": r.model_id, "name": r.display_name, "category": r.category, "accuracy": r.accuracy,
                    "avg": r.avg_criticality, "std": r.std_criticality, "epsilon": r.epsilon, "norm": r.norm}
                   for r in stats.itertuples(index=False)],
        "values": {"abs": _rows(study.matrix()), "delta": _rows(study.delta()), "std": _rows(std),
                   "top1": _rows(study.matrix("top1_acc")), "recovered": _rows(study.matrix("recovered_acc"))},
        "scales": {
            "abs": {"stops": style.colormap_stops(style.CRITICALITY_CMAP), "min": 0, "max": 100,
                    "label": f"{study.metric_label} [%]"},
            "delta": {"stops": style.colormap_stops(style.DELTA_CMAP), "min": -100, "max": 100,
                      "label": f"{study.metric_label} − {study.baseline} [pp]"},
            "std": {"stops": style.colormap_stops(style.STD_CMAP), "min": 0, "max": std_limit(std),
                    "label": "std over trials [%]"},
        },
        "categories": [{"name": c, "color": colors[c]} for c in dict.fromkeys(study.models["category"])],
        "correlations": correlation_lines(study.correlations()),
        "stages": {
            "columns": list(stages.columns),
            "models": [{"id": m, "name": merged.at[m, "display_name"], "values": stages.loc[m].tolist()}
                       for m in stages.index],
            "categories": [{"name": c, "n": int(counts[c]), "values": cat_stages.loc[c].tolist()}
                           for c in cat_stages.index],
        },
        "runs": [{"model_id": r.model_id, "source": r.source, "spec": r.spec,
                  "category": merged.at[r.model_id, "category"], "accuracy": merged.at[r.model_id, "accuracy"],
                  "samples": r.samples, "seed": r.seed, "trials": r.trials, "started": r.started,
                  "finished": r.finished, "config": r.config}
                 for r in runs.itertuples(index=False)],
    })


def render_page(study: Results, colors: dict[str, str], title: str = "layercrit report") -> str:
    data = json.dumps(page_data(study, colors), allow_nan=False, ensure_ascii=False)
    data = data.replace("<", "\\u003c")  # no "</script>" inside the data block, whatever the model names say
    page = _asset("page.html")
    for key, value in (("/*__CSS__*/", _asset("page.css")), ("/*__JS__*/", _asset("page.js")),
                       ("__TITLE__", html.escape(title)), ("__DATA__", data)):
        page = page.replace(key, value)
    return page
