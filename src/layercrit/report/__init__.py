"""Report: the study's figures (matplotlib/seaborn), tables and interactive page from a :class:`Results`.

    from layercrit.analysis import load_results
    from layercrit.report import write_report
    write_report(load_results(["study.db"]), "report/")
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from ..analysis import Results, summary
from ..analysis.claims import Claims
from ..errors import ConfigError
from ..paths import writing_into
from . import style
from .bars import layer_bar_figure
from .heatmap import Panel, heatmap_figure
from .lab import write_lab
from .page import render_page, std_limit
from .scatter import accuracy_figure, epsilon_figure
from .stages import stages_frame, stages_markdown

FIGURE_DPI = 200
# Always written; the figures that compare models appear only where there is something to compare
# (delta: two models of the baseline's architecture; accuracy_vs_criticality: two with an accuracy;
# epsilon: a model with a training epsilon); a one-model report gets criticality_by_layer instead.
FILES = ("heatmap.png", "heatmap.pdf", "std.png", "std.pdf", "stages.csv", "stages.md", "summary.json", "index.html")


def write_report(study: Results, out: str | Path, *, lab: pd.DataFrame | None = None,
                 lab_reference: str | None = None, claims: Claims | None = None,
                 claim_results: tuple[Results, ...] = ()) -> list[Path]:
    """Write every report file into ``out`` (created if needed); returns their paths.

    ``lab``: the table of ``layercrit study accuracies`` (:func:`layercrit.analysis.read_lab_csv`); adds the
    training-lab files (lab.md, lab_*.csv, trajectory figures; see :mod:`layercrit.report.lab`), with the
    accuracy-matched comparison against the method ``lab_reference`` (default: standard). ``claims``
    (:func:`layercrit.analysis.read_claims`, with ``lab``): their verdicts (lab_claims.csv, lab_verdicts.csv, a
    section of lab.md) under ``study``'s measure and those of ``claim_results`` (the same sources loaded with
    another ``metric``).

    Everything is rendered into a temporary sibling folder first and moved into ``out`` only
    when complete, so an error never leaves a half-written report behind.
    """
    out = Path(out)
    if claims is not None and lab is None:
        raise ConfigError("{claims} are judged on a lab table: pass {lab} as well (the table of "
                          "`layercrit study accuracies`)", ("claims", "lab"))
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{{out}} {out} is a file: choose a folder", ("out",))
    if not out.parent.is_dir():
        raise ConfigError(f"folder for {{out}} does not exist: {out.parent}: create it first", ("out",))
    with writing_into(out):
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        try:
            names = render(study, tmp)
            if lab is not None:
                with style.plain_text():
                    names += write_lab(study, lab, tmp, lab_reference, FIGURE_DPI, claims, claim_results)
            out.mkdir(exist_ok=True)
            for name in names:
                os.replace(tmp / name, out / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return [out / name for name in names]


def render(study: Results, folder: Path) -> list[str]:
    """Every report file into ``folder``; returns their names. Model names and categories are drawn as
    plain text: a '$' in a name never starts matplotlib's mathtext."""
    with style.plain_text():
        return _render(study, folder)


def _panels(study: Results, matrix, archs: list[str]) -> list[Panel]:
    """One heatmap panel per architecture (titled only when the report holds several)."""
    panels = []
    for arch in archs:
        models = study.models[study.models["arch"] == arch]
        layers = study.layers[study.layers["arch"] == arch]
        panels.append(Panel(matrix.loc[list(models["model_id"]), list(layers["column"])],
                            row_labels=list(models["display_name"]), col_labels=list(layers["label"]),
                            categories=list(models["category"]), title=arch if len(study.archs) > 1 else None))
    return panels


def _render(study: Results, folder: Path) -> list[str]:
    colors = style.category_colors(list(study.models["category"]))
    trials = study.model_stats["n_trials"]
    n = int(trials.max())
    over = ("one trial" if n == 1 else f"mean over {n} trials") if trials.min() == trials.max() else "mean over trials"
    std = study.matrix("criticality_std")
    stats = study.model_stats
    what = study.metric_label
    base_arch = study.models.loc[study.models["model_id"] == study.baseline, "arch"].iloc[0]
    figures = {
        "heatmap": heatmap_figure(_panels(study, study.matrix(), study.archs), colors=colors,
                                  cmap=style.CRITICALITY_CMAP, vmin=0, vmax=100,
                                  title=f"Layer {what} [%] (reset: {study.reset}, {over})",
                                  cbar_label=f"{what} [%]"),
        "std": heatmap_figure(_panels(study, std, study.archs), colors=colors, cmap=style.STD_CMAP, vmin=0,
                              vmax=std_limit(std), title=f"Standard deviation of layer {what} over trials [%]",
                              cbar_label="std [%]"),
    }
    if (study.models["arch"] == base_arch).sum() > 1:  # deltas exist only against a model of the same layout
        figures["delta"] = heatmap_figure(_panels(study, study.delta(), [base_arch]), colors=colors,
                                          cmap=style.DELTA_CMAP, vmin=-100, vmax=100, center=0,
                                          title=f"Layer {what} minus the baseline's ({study.baseline}) [pp]",
                                          cbar_label=f"Δ {what} [pp]")
    if stats.dropna(subset=["accuracy", "avg_criticality"]).shape[0] > 1:
        figures["accuracy_vs_criticality"] = accuracy_figure(stats, study.correlations(), colors)
    if stats.dropna(subset=["epsilon", "avg_criticality"]).shape[0] > 0:
        figures["epsilon"] = epsilon_figure(stats, study.baseline)
    if len(study.model_ids) == 1:
        only = study.models.iloc[0]
        figures["criticality_by_layer"] = layer_bar_figure(study.layer_stats, str(only["display_name"]))
    names = []
    for name, fig in figures.items():
        names += style.save_figure(fig, folder, name, FIGURE_DPI)
    stages_frame(study).to_csv(folder / "stages.csv", index=False)
    (folder / "stages.md").write_text(stages_markdown(study), encoding="utf-8")
    (folder / "summary.json").write_text(json.dumps(summary(study), indent=2, allow_nan=False) + "\n",
                                         encoding="utf-8")
    (folder / "index.html").write_text(render_page(study, colors), encoding="utf-8")
    return names + ["stages.csv", "stages.md", "summary.json", "index.html"]


__all__ = ["FILES", "render", "write_report"]
