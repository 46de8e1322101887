"""Results: the measurements of many models from databases and CSVs, with metadata and a baseline (the
study's tables; not to be confused with a TOML study file, :mod:`layercrit.study`)."""
from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError, LayercritError, Message, name_fields
from ..patterns import select_names
from . import tables
from .layers import architecture_groups, layer_frame
from . import metadata as _metadata
from .sources import METRICS, Source, common_output, read_database, read_paper_csv
from .stats import DEFAULT_WITHOUT, correlation_table, correlations

UNCATEGORIZED = "uncategorized"
BASELINE_CATEGORY = "baseline"
# The study's groups in the order its figures show them; other categories follow alphabetically.
STUDY_CATEGORIES = ("baseline", "adversarial training", "augmentation", "self-supervised (linear probe)",
                    "improved training recipe")


class ReportWarning(UserWarning):
    """Something the report works around (missing metadata, ...) but the user should know."""


class Note(str, Message):
    """A warning or note of :class:`Results`: a ``str`` that names options as ``{field}`` placeholders, like
    :class:`layercrit.errors.Message`. The text names the Python parameters (``metadata``); the CLI renders
    ``naming(flags)`` (``--metadata``)."""

    template: str
    fields: tuple[str, ...]

    def __new__(cls, template: str, fields: tuple[str, ...]) -> Note:
        note = super().__new__(cls, name_fields(template, {}, fields))
        note.template, note.fields = template, tuple(fields)
        return note

    def __init__(self, template: str, fields: tuple[str, ...]) -> None:  # the text was made by __new__
        pass

    def naming(self, names: dict[str, str]) -> str:
        return name_fields(self.template, names, self.fields)

    def __reduce__(self):
        return Note, (self.template, self.fields)


@dataclass
class Results:
    """Measurements (``rows``: one per model, layer, trial) with everything the report derives from them.

    ``models`` is in display order (grouped by category, the baseline's category first and the
    baseline first) and carries the merged metadata; ``layers`` is in network order.
    """
    rows: pd.DataFrame
    runs: pd.DataFrame
    models: pd.DataFrame
    layers: pd.DataFrame
    baseline: str
    reset: str = "random"
    metric: str = "criticality"  # or "disagreement" (100 - pred_agreement), see sources.METRICS
    without: tuple[str, ...] = DEFAULT_WITHOUT
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    nonfinite: dict[str, int] = field(default_factory=dict)  # model id -> rows whose criticality is NaN or Inf
    output: str = "probs"  # what the runs compared (sources.compared_output): "probs", "logits", "module:<name>"

    @property
    def model_ids(self) -> list[str]:
        return list(self.models["model_id"])

    @property
    def layer_names(self) -> list[str]:
        """The matrix columns: layer names, or "<architecture> · <layer>" when architectures differ."""
        return list(self.layers["column"])

    @property
    def metric_label(self) -> str:
        """What the values are: "criticality" or "top-1 disagreement" (percent either way), with the output
        compared where it is not the study's softmax: "criticality of module:global_pool", "... of logits"."""
        return METRICS[self.metric] + ("" if self.output == "probs" else f" of {self.output}")

    @property
    def archs(self) -> list[str]:
        """Architecture groups in display order (one, unless models of different layouts are reported)."""
        return list(dict.fromkeys(self.layers["arch"]))

    @cached_property
    def layer_stats(self) -> pd.DataFrame:
        """Per (model, layer): criticality mean/std over trials, top-1, recovered accuracy, label, stage."""
        stats = tables.layer_table(self.rows).merge(self.models[["model_id", "arch"]], on="model_id")
        return stats.merge(self.layers[["arch", "layer", "column", "label", "stage", "position"]], on=["arch", "layer"])

    @cached_property
    def model_stats(self) -> pd.DataFrame:
        return tables.model_table(self.layer_stats, self.models)

    @cached_property
    def category_stats(self) -> pd.DataFrame:
        return tables.category_table(self.model_stats)

    @cached_property
    def stage_stats(self) -> pd.DataFrame:
        return tables.stage_table(self.layer_stats, self.model_ids)

    @cached_property
    def category_stage_stats(self) -> pd.DataFrame:
        return tables.category_stage_table(self.stage_stats, self.models)

    def matrix(self, value: str = "criticality", arch: str | None = None) -> pd.DataFrame:
        """Models x layers of a layer_stats column (criticality, criticality_std, top1_acc, recovered_acc).

        With several architectures the columns are each group's layers in its own forward order, group
        after group (cells of another group's layers are NaN); ``arch`` keeps one group's rows and columns.
        """
        models, layers = self.models, self.layers
        if arch is not None:
            models, layers = models[models["arch"] == arch], layers[layers["arch"] == arch]
        return tables.criticality_matrix(self.layer_stats, list(models["model_id"]), list(layers["column"]), value,
                                         column="column")

    def delta(self) -> pd.DataFrame:
        return tables.delta_matrix(self.matrix(), self.baseline)

    def correlations(self) -> dict:
        return correlations(self.model_stats, self.without)

    def correlation_table(self) -> pd.DataFrame:
        return correlation_table(self.model_stats, self.without)


def load_results(dbs: Sequence[str | Path] = (), paper_csvs: Sequence[str | Path] = (), *, reset: str = "random",
               baseline: str | None = None, metadata: str | Path | pd.DataFrame | None = None,
               without: Sequence[str] = DEFAULT_WITHOUT, unit: str = "layer", metric: str = "criticality",
               only: Sequence[str] = ()) -> Results:
    """Read results databases and/or raw-results CSVs in the original study's layout into a :class:`Results`.

    Metadata precedence: zoo registry < the databases' own (category, measured top-1) <
    ``metadata`` (a CSV path or a frame with columns model_id, category, accuracy, epsilon,
    norm, display_name). Problems worked around are in ``results.warnings`` (and issued as
    :class:`ReportWarning`); choices made for the user (the baseline) in ``results.notes``.
    ``unit="block"`` reads the databases' residual-block rows instead of layers. ``metric="disagreement"``
    reports 100 - ``pred_agreement`` (the % of images whose top-1 class a reset changes) in place of the
    criticality: every table, figure and correlation then reads in that measure. ``only``: fnmatch patterns of
    the model ids to report (``"!pattern"`` leaves models out; e.g. ``["!*-e??"]`` drops trajectory checkpoints).
    """
    dbs, paper_csvs = list(dbs), list(paper_csvs)
    if not dbs and not paper_csvs:
        raise ConfigError("no results given: pass at least one {dbs} STUDY.db or {paper_csvs} FILE",
                          ("dbs", "paper_csvs"))
    if paper_csvs and reset != "random":
        raise ConfigError(f"a raw-results CSV holds the study's random resets only, not '{reset}': "
                          "leave out {reset}, or report the CSV separately", ("reset",))
    if paper_csvs and unit != "layer":
        raise ConfigError("a raw-results CSV holds layers only: report {unit} block from databases alone", ("unit",))
    user_meta = None
    if metadata is not None:
        user_meta = metadata if isinstance(metadata, pd.DataFrame) else _given(_metadata.read_metadata_csv, metadata)
    if metric not in METRICS:
        raise LayercritError(f"unknown metric '{metric}': use {' or '.join(METRICS)}")
    if paper_csvs and metric != "criticality":
        raise ConfigError("a raw-results CSV records no top-1 agreement: report {metric} disagreement from "
                          "databases alone", ("metric",))
    sources = [read_database(p, reset, unit, metric) for p in dbs] + [_given(read_paper_csv, p) for p in paper_csvs]
    _check_unique_models(sources)
    rows = pd.concat([s.rows for s in sources], ignore_index=True)
    runs = pd.concat([s.runs for s in sources], ignore_index=True)
    if only:
        try:
            kept = select_names(list(dict.fromkeys(rows["model_id"])), only, what="model",
                                hint="the ids are in `layercrit export` or the report's summary.json; check {only}")
        except LayercritError as e:  # a pattern that matches no model: the message names the parameter
            raise ConfigError(str(e), ("only",)) from None
        if not kept:
            raise ConfigError(f"{{only}} {' '.join(only)} leaves no model to report: loosen it", ("only",))
        rows = rows[rows["model_id"].isin(kept)].reset_index(drop=True)
        runs = runs[runs["model_id"].isin(kept)].reset_index(drop=True)

    output = common_output(runs, metric)  # one measure: the runs compared the same output
    found: list[str] = []  # warnings for the user
    nonfinite = _nonfinite_rows(rows, found)
    study_meta = runs[["model_id", "category", "accuracy"]]
    meta = _metadata.merge_metadata(_metadata.registry_metadata(), study_meta, user_meta).set_index("model_id")
    models = meta.reindex(list(dict.fromkeys(rows["model_id"]))).rename_axis("model_id").reset_index()
    models["source"] = models["model_id"].map(runs.set_index("model_id")["source"])
    _fill_gaps(models, found)
    if user_meta is not None:
        unknown = set(user_meta["model_id"]) - set(models["model_id"])
        if unknown:
            found.append(Note(f"{{metadata}} lists model id(s) without results: {_few(unknown)}; check the ids",
                              ("metadata",)))

    notes: list[str] = []
    chosen = _choose_baseline(models, baseline, notes)
    models = _display_order(models, chosen)
    for message in found:
        warnings.warn(message, ReportWarning, stacklevel=2)
    arch_of = architecture_groups(rows, _arch_names(runs))
    models["arch"] = models["model_id"].map(arch_of)
    return Results(rows=rows, runs=runs, models=models, layers=_layers(rows, models), baseline=chosen, reset=reset,
                   metric=metric, without=tuple(without), warnings=found, notes=notes, nonfinite=nonfinite,
                   output=output)


def _given(read, path):
    """``read(path)`` for :func:`load_results`: its errors name the file as load_results' parameter
    (``paper_csvs``, ``metadata``), not as the reader's ``path``."""
    try:
        return read(path)
    except ConfigError as e:
        raise ConfigError(e.template, e.fields) from None


def _arch_names(runs: pd.DataFrame) -> dict[str, str]:
    """model id -> the architecture its run records (``arch`` in the config; a user's file shortened to
    ``file.py:callable``)."""
    names = {}
    for model_id, config in zip(runs["model_id"], runs["config"]):
        arch = (config or {}).get("arch") if isinstance(config, dict) else None
        if arch:
            names[str(model_id)] = Path(str(arch)).name if ".py:" in str(arch) else str(arch)
    return names


def _layers(rows: pd.DataFrame, models: pd.DataFrame) -> pd.DataFrame:
    """Each architecture group's layer frame (its own forward order and stages), group after group in the
    order the models are displayed; ``column`` is the layer name, prefixed by the group where several exist."""
    arch_of = models.set_index("model_id")["arch"]
    archs = list(dict.fromkeys(models["arch"]))
    frames = []
    for arch in archs:
        frame = layer_frame(rows[rows["model_id"].map(arch_of) == arch]).assign(arch=arch)
        frame["column"] = frame["layer"] if len(archs) == 1 else arch + " · " + frame["layer"]
        frames.append(frame)
    layers = pd.concat(frames, ignore_index=True)
    layers["position"] = range(len(layers))
    return layers


def _nonfinite_rows(rows: pd.DataFrame, found: list[str]) -> dict[str, int]:
    """Rows whose criticality is not a finite number (a reset whose outputs overflowed): counted per model,
    flagged as a warning, set to NaN so the figures show them as missing and the means leave them out."""
    values = pd.to_numeric(rows["criticality"], errors="coerce").astype(float)
    bad = ~np.isfinite(values.to_numpy())
    rows["criticality"] = values.where(~bad, np.nan)  # float even where every value was NULL
    if not bad.any():
        return {}
    counts = rows.loc[bad, "model_id"].value_counts().to_dict()
    shown = ", ".join(f"{m} ({n})" for m, n in list(counts.items())[:5]) + (" ..." if len(counts) > 5 else "")
    found.append(f"non-finite criticality (NaN or Inf: the reset's outputs overflowed) in {int(bad.sum())} row(s): "
                 f"{shown}; shown as missing in the figures and left out of the means (summary.json: nonfinite_rows)")
    return {str(k): int(v) for k, v in counts.items()}


def _check_unique_models(sources: list[Source]) -> None:
    where: dict[str, str] = {}
    for s in sources:
        for model_id, origin in zip(s.runs["model_id"], s.runs["source"]):
            if model_id in where:
                raise ConfigError(f"model id '{model_id}' is in both {where[model_id]} and {origin}: "
                                  "report them separately, or rename one ({name})", ("name",),
                                  python={"name": "create_model(..., name=...)"})
            where[model_id] = origin


def _fill_gaps(models: pd.DataFrame, found: list[str]) -> None:
    missing = models["category"].isna()
    if missing.any():
        found.append(Note(f"no category for {_few(models.loc[missing, 'model_id'])}: shown as '{UNCATEGORIZED}'; "
                          "give one with {metadata} FILE.csv (columns model_id, category, accuracy, epsilon, norm, "
                          "display_name)", ("metadata",)))
        models.loc[missing, "category"] = UNCATEGORIZED
    no_acc = models["accuracy"].isna()
    if no_acc.any():
        found.append(Note(f"no accuracy for {_few(models.loc[no_acc, 'model_id'])}: left out of the accuracy "
                          "correlation and scatter; give one with {metadata} FILE.csv", ("metadata",)))
    models["display_name"] = models["display_name"].where(models["display_name"].notna(), models["model_id"])


def _choose_baseline(models: pd.DataFrame, baseline: str | None, notes: list[str]) -> str:
    ids = list(models["model_id"])
    if baseline is not None:
        if baseline not in ids:
            raise ConfigError(f"{{baseline}} {baseline} is not among the reported models ({_few(ids)}): "
                              "choose one of them", ("baseline",))
        return baseline
    named = [m for m, c in zip(ids, models["category"]) if c == BASELINE_CATEGORY]
    if len(named) == 1:
        notes.append(Note(f"baseline: {named[0]} (the only model of category '{BASELINE_CATEGORY}'; choose "
                          "another with {baseline})", ("baseline",)))
        return named[0]
    why = "no model has" if not named else f"{len(named)} models have"
    notes.append(Note(f"baseline: {ids[0]}, the first model, since {why} category '{BASELINE_CATEGORY}'; "
                      "choose one with {baseline}", ("baseline",)))
    return ids[0]


def _display_order(models: pd.DataFrame, baseline: str) -> pd.DataFrame:
    base_category = models.loc[models["model_id"] == baseline, "category"].iloc[0]

    def category_rank(c: str):
        if c == base_category:
            return (0, 0, "")
        if c in STUDY_CATEGORIES:
            return (1, STUDY_CATEGORIES.index(c), "")
        return (3, 0, "") if c == UNCATEGORIZED else (2, 0, c)

    keys = [(category_rank(c), m != baseline, n or "", _eps(e), _natural(d))
            for m, c, n, e, d in zip(models["model_id"], models["category"], models["norm"], models["epsilon"],
                                     models["display_name"])]
    order = sorted(range(len(models)), key=keys.__getitem__)
    return models.iloc[order].reset_index(drop=True)


def _eps(value) -> float:
    return float(value) if pd.notna(value) else np.inf


def _natural(text: str) -> tuple:
    """'eps3' before 'eps10': compare digit runs as numbers."""
    return tuple((0, float(t), "") if t[:1].isdigit() else (1, 0.0, t.lower())
                 for t in re.findall(r"\d+(?:\.\d+)?|\D+", str(text)))


def _few(ids, limit: int = 5) -> str:
    ids = sorted(ids)
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")
