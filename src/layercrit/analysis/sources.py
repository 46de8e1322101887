"""Read measurements from results databases and from the original study's raw-results CSV.

Both become one long frame (``ROW_COLUMNS``: one row per model, layer and trial, criticality
in percent) plus one row per model describing its run (``RUN_COLUMNS``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError, LayercritError
from ..store.sqlite import ResultStore
from .layers import strip_prefix

ROW_COLUMNS = ["model_id", "layer", "layer_index", "layer_type", "trial", "criticality", "top1_acc", "recovered_acc",
               "source"]
RUN_COLUMNS = ["model_id", "category", "accuracy", "source", "spec", "samples", "seed", "trials", "started",
               "finished", "config"]
# What the report needs of the study's CSV (its full layout: store.export.PAPER_COLUMNS).
PAPER_REQUIRED = ("model_id", "layer", "trial", "pred_cos_sim", "top1_acc", "recovered_acc")


@dataclass
class Source:
    rows: pd.DataFrame  # ROW_COLUMNS
    runs: pd.DataFrame  # RUN_COLUMNS; config is a dict


# What the report's "criticality" column holds: the study's measure, a confidence-insensitive one, or the study's
# measure on temperature-scaled outputs (databases measured with a temperature: `measure --temperature calibrate`).
METRICS = {"criticality": "criticality", "disagreement": "top-1 disagreement", "calibrated": "calibrated criticality"}


def read_database(path: str | Path, reset: str = "random", unit: str = "layer", metric: str = "criticality") -> Source:
    """The ``reset`` rows of one ``unit`` kind (layer or block) of a results database, and its runs.

    ``metric="disagreement"`` puts 100 - ``pred_agreement`` (% of images whose top-1 class the reset
    changes) where the criticality would be: a measure that does not depend on how confident the
    softmax is, unlike the cosine of criticality."""
    with ResultStore(path, create=False) as store:
        tidy = store.results(unit=unit)
        runs = store.runs()
    if tidy.empty:
        raise LayercritError("{path} holds no {unit} results yet: run `layercrit measure --unit {unit}` first"
                             .format(path=path, unit=unit))  # one literal: the command stays whole in its quotes
    kinds = sorted(tidy["reset"].unique())
    if reset not in kinds:
        raise ConfigError(f"{path} holds no '{reset}' resets (it has {', '.join(kinds)}): choose one with {{reset}}",
                          ("reset",))
    tidy = tidy[tidy["reset"] == reset]
    if metric == "calibrated":
        plain = [m for m, c in zip(runs["model_id"], runs["config"])
                 if m in set(tidy["model_id"]) and not tempered(json.loads(c) if isinstance(c, str) else {})]
        if plain:
            raise LayercritError(f"{path} holds model(s) measured without a temperature ({', '.join(plain[:3])}"
                                 f"{', ...' if len(plain) > 3 else ''}): the calibrated measure needs databases "
                                 "measured with a temperature (temperature = \"calibrate\")")
    if metric == "disagreement":
        tidy = tidy.assign(criticality=100.0 - pd.to_numeric(tidy["pred_agreement"]))
    rows = tidy.assign(source=str(path))[ROW_COLUMNS].reset_index(drop=True)
    runs = runs[runs["model_id"].isin(rows["model_id"].unique())]
    configs = [json.loads(c) if isinstance(c, str) else {} for c in runs["config"]]
    versions = [json.loads(v) if isinstance(v, str) else {} for v in runs["versions"]]
    table = pd.DataFrame({
        "model_id": runs["model_id"].to_numpy(),
        "category": runs["category"].to_numpy(),
        # a measured model's accuracy is its own unmodified top-1 on the evaluation subset
        "accuracy": pd.to_numeric(runs["base_top1_acc"]).to_numpy(),
        "source": str(path),
        "spec": runs["model_spec"].to_numpy(),
        "samples": [c.get("samples") for c in configs],
        "seed": [c.get("seed") for c in configs],
        "trials": [c.get("trials") for c in configs],
        "started": runs["started"].to_numpy(),
        "finished": runs["finished"].to_numpy(),
        "config": [{**c, "versions": v} for c, v in zip(configs, versions)],
    })
    return Source(rows, table[RUN_COLUMNS])


def compared_output(config: dict) -> str:
    """What a run compared (its ``output``): "probs" (the study's softmax; runs from before it was recorded),
    "logits", "module:<name>" or "callable:<module>.<name>"."""
    value = config.get("output") if isinstance(config, dict) else None
    return str(value) if value else "probs"


def common_output(runs: pd.DataFrame, metric: str = "criticality") -> str:
    """The one output the runs (``RUN_COLUMNS``, config a dict) compared; an error where they differ (their
    criticalities are different measures) or where ``metric`` needs class scores that a run lacks."""
    by_output: dict[str, list[str]] = {}
    for model_id, config in zip(runs["model_id"], runs["config"]):
        by_output.setdefault(compared_output(config), []).append(str(model_id))
    if len(by_output) > 1:
        shown = "; ".join(f"{o}: {', '.join(m[:3])}{', ...' if len(m) > 3 else ''}" for o, m in by_output.items())
        raise LayercritError(f"these results compare different outputs ({shown}): their criticalities are different "
                             "measures; report them separately")
    output = next(iter(by_output), "probs")
    if metric == "disagreement" and output not in ("probs", "logits"):
        raise ConfigError(f"{{metric}} disagreement needs class scores, but these results compare {output} "
                          "(no top-1): use {metric} criticality", ("metric",))
    return output


def tempered(config: dict) -> bool:
    """Whether a run's outputs were temperature-scaled (a fixed T other than 1, or one fitted per model)."""
    t = config.get("temperature")
    return t is not None and t != 1 and t != 1.0


# read_paper_csv's messages name the file as load_results' parameter (paper_csvs), which the CLI calls --paper-csv;
# a caller of read_paper_csv itself reads its own: path
_AS_PATH = {"paper_csvs": "path"}


def read_paper_csv(path: str | Path) -> Source:
    """Rows of a raw-results CSV in the original study's layout (re-randomization resets)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"raw-results CSV not found: {path}: check {{paper_csvs}}", ("paper_csvs",), python=_AS_PATH)
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not a readable CSV ({str(e).splitlines()[0]}): check {{paper_csvs}}",
                          ("paper_csvs",), python=_AS_PATH) from None
    missing = [c for c in PAPER_REQUIRED if c not in df.columns]
    if missing:
        raise ConfigError(f"{path} lacks the raw-results column(s) {', '.join(missing)} "
                          "(the original study's layout, see METHOD.md): check {paper_csvs}",
                          ("paper_csvs",), python=_AS_PATH)
    if df.empty:
        raise ConfigError(f"{path} holds no rows: check {{paper_csvs}}", ("paper_csvs",), python=_AS_PATH)
    numeric = {}
    for col in ("trial", "pred_cos_sim", "top1_acc", "recovered_acc"):
        values = pd.to_numeric(df[col], errors="coerce")
        if values.isna().any() and col in ("trial", "pred_cos_sim"):
            raise LayercritError(f"{path}: column {col} has empty or non-numeric values: check the file")
        numeric[col] = values
    rows = pd.DataFrame({
        "model_id": df["model_id"].astype(str),
        "layer": df["layer"].astype(str).map(strip_prefix),
        "layer_index": np.nan,  # the CSV records no forward order; layers.layer_order derives it
        "layer_type": None,  # nor module types
        "trial": numeric["trial"].astype(int),
        "criticality": 100.0 * (1.0 - numeric["pred_cos_sim"]),
        "top1_acc": numeric["top1_acc"],
        "recovered_acc": numeric["recovered_acc"],
        "source": str(path),
    })
    counts = rows.groupby("model_id", sort=False).agg(trials=("trial", "nunique"), n=("layer", "size"))
    runs = pd.DataFrame({
        "model_id": counts.index, "category": None, "accuracy": np.nan, "source": str(path),
        "spec": "raw-results CSV", "samples": None, "seed": None, "trials": counts["trials"].to_numpy(),
        "started": None, "finished": None,
        "config": [{"file": str(path), "layout": "original study raw results", "rows": int(n)} for n in counts["n"]],
    })
    return Source(rows[ROW_COLUMNS], runs[RUN_COLUMNS])
