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

from ..analysis import Results, summary
from ..errors import LayercritError
from ..paths import writing_into
from . import style
from .heatmap import heatmap_figure
from .page import render_page, std_limit
from .scatter import accuracy_figure, epsilon_figure
from .stages import stages_frame, stages_markdown

FIGURE_DPI = 200
FILES = ("heatmap.png", "heatmap.pdf", "delta.png", "delta.pdf", "std.png", "std.pdf",
         "accuracy_vs_criticality.png", "accuracy_vs_criticality.pdf", "epsilon.png", "epsilon.pdf",
         "stages.csv", "stages.md", "summary.json", "index.html")


def write_report(study: Results, out: str | Path) -> list[Path]:
    """Write every report file into ``out`` (created if needed); returns their paths.

    Everything is rendered into a temporary sibling folder first and moved into ``out`` only
    when complete, so an error never leaves a half-written report behind.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LayercritError(f"--out {out} is a file: choose a folder")
    if not out.parent.is_dir():
        raise LayercritError(f"folder for --out does not exist: {out.parent}: create it first")
    with writing_into(out):
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        try:
            render(study, tmp)
            out.mkdir(exist_ok=True)
            for name in FILES:
                os.replace(tmp / name, out / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return [out / name for name in FILES]


def render(study: Results, folder: Path) -> None:
    """Every report file into ``folder``. Model names and categories are drawn as plain text: a '$'
    in a name never starts matplotlib's mathtext."""
    with style.plain_text():
        _render(study, folder)


def _render(study: Results, folder: Path) -> None:
    colors = style.category_colors(list(study.models["category"]))
    row_labels = list(study.models["display_name"])
    common = {"row_labels": row_labels, "col_labels": list(study.layers["label"]),
              "categories": list(study.models["category"]), "colors": colors}
    trials = study.model_stats["n_trials"]
    n = int(trials.max())
    over = ("one trial" if n == 1 else f"mean over {n} trials") if trials.min() == trials.max() else "mean over trials"
    std = study.matrix("criticality_std")
    figures = {
        "heatmap": heatmap_figure(study.matrix(), cmap=style.CRITICALITY_CMAP, vmin=0, vmax=100,
                                  title=f"Layer criticality [%] (reset: {study.reset}, {over})",
                                  cbar_label="criticality [%]", **common),
        "delta": heatmap_figure(study.delta(), cmap=style.DELTA_CMAP, vmin=-100, vmax=100, center=0,
                                title=f"Layer criticality minus the baseline's ({study.baseline}) [pp]",
                                cbar_label="Δ criticality [pp]", **common),
        "std": heatmap_figure(std, cmap=style.STD_CMAP, vmin=0, vmax=std_limit(std),
                              title="Standard deviation of layer criticality over trials [%]",
                              cbar_label="std [%]", **common),
        "accuracy_vs_criticality": accuracy_figure(study.model_stats, study.correlations(), colors),
        "epsilon": epsilon_figure(study.model_stats, study.baseline),
    }
    for name, fig in figures.items():
        fig.savefig(folder / f"{name}.png", dpi=FIGURE_DPI, facecolor="white")
        fig.savefig(folder / f"{name}.pdf", facecolor="white")
    stages_frame(study).to_csv(folder / "stages.csv", index=False)
    (folder / "stages.md").write_text(stages_markdown(study), encoding="utf-8")
    (folder / "summary.json").write_text(json.dumps(summary(study), indent=2, allow_nan=False) + "\n",
                                         encoding="utf-8")
    (folder / "index.html").write_text(render_page(study, colors), encoding="utf-8")


__all__ = ["FILES", "render", "write_report"]
