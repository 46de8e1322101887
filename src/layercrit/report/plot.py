"""Figures for a notebook, straight from a results table (``layercrit.plot`` re-exports these functions).

Each function takes the tidy table :func:`layercrit.measure` returns (one row per unit x reset x trial), the same
table read back from a results database or a ``layercrit export`` CSV (tidy or paper layout), or a
:class:`layercrit.analysis.Results`, and returns a matplotlib :class:`~matplotlib.figure.Figure`. Nothing is
shown or written: a notebook displays the returned figure, ``fig.savefig(...)`` writes it. The figures are
plain ``Figure`` objects, not pyplot's, so a notebook shows each once and pyplot's state is left alone.

Layers are in network order and staged (stem, stage 1-4, head, other) as the report does
(:mod:`layercrit.analysis.layers`); a table with several reset kinds (``reset=["random", "zero"]``) shows
each model and reset as its own series, named ``"model (reset)"``, unless ``reset=`` picks one. Rows whose
metric is NaN or infinite are left out, with a warning, never drawn as zeros.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy import stats as _stats

from ..analysis import UNCATEGORIZED, ReportWarning, Results
from ..analysis.layers import architecture_groups, layer_frame, strip_prefix
from ..analysis.tables import stage_table
from ..errors import ConfigError
from ..store.sqlite import METRICS as STORE_METRICS
from . import style
from .heatmap import Panel, heatmap_figure

# What each metric is called on an axis; a heatmap of a percentage ("[%]") spans 0..100 unless told otherwise.
_LABELS = {
    "criticality": "criticality [%]",
    "disagreement": "top-1 disagreement [%]",
    "top1_acc": "top-1 accuracy after the reset [%]",
    "top5_acc": "top-5 accuracy after the reset [%]",
    "pred_agreement": "top-1 agreement with the unmodified model [%]",
    "recovered_acc": "recovered accuracy (top-1 / unmodified top-1)",
    "criticality_ci": "95 % CI half-width of the criticality [pp]",
    "pred_cos_sim": "cosine similarity to the unmodified outputs",
}
METRICS = (*STORE_METRICS, "disagreement")  # every metric column of the tidy table, and 100 - pred_agreement
ERRORS = ("std", "ci")
FONT = 7  # pt


@dataclass
class _Table:
    """A results table reduced to one metric: ``rows`` (series, layer, trial, value: finite values only), the
    series in display order with their category and architecture group, and each group's layer frame."""

    rows: pd.DataFrame
    series: list[str]
    category: dict[str, str]
    arch: dict[str, str]
    layers: dict[str, pd.DataFrame]  # architecture -> layer, label, stage in network order
    metric: str
    label: str  # the metric's axis label

    def stats(self, error: str) -> pd.DataFrame:
        """Per (series, layer): mean over trials, std, n and the error bar's half-length (``error``)."""
        g = self.rows.groupby(["series", "layer"], sort=False)["value"]
        table = g.agg(mean="mean", std="std", n="count").reset_index()
        table["err"] = _half_length(table["std"], table["n"], error)
        return table

    def layer_list(self, series: str) -> pd.DataFrame:
        return self.layers[self.arch[series]]

    def trials_text(self, error: str) -> str:
        counts = self.rows.groupby(["series", "layer"])["trial"].nunique()
        if counts.max() == 1:
            return "one trial"
        spread = "std" if error == "std" else "95 % CI"
        n = f"{counts.max()} trials" if counts.min() == counts.max() else "trials"
        return f"mean ± {spread} over {n}"


def layers(df: pd.DataFrame | Results, metric: str = "criticality", ax: Axes | None = None, *, error: str = "std",
           reset: str | None = None, unit: str | None = None) -> Figure:
    """Per-layer bars in network order: the mean over trials with an error bar, coloured by network stage.

    Several models (or resets) get one panel each, stacked, with a shared value axis: each panel keeps its
    stage colours and its own architecture's layers, which grouped bars of many models would not.

    Args:
        df: the tidy table of :func:`layercrit.measure` (or read back from a database or a ``layercrit
            export`` CSV), or a :class:`layercrit.analysis.Results`.
        metric: a metric column (``criticality``, ``top1_acc``, ``pred_agreement``, ...; see :data:`METRICS`)
            or ``"disagreement"`` (100 - ``pred_agreement``). A ``Results`` holds its own metric (criticality
            or disagreement), ``top1_acc`` and ``recovered_acc``.
        ax: draw into these axes (one model only); default: a new figure.
        error: the error bar: ``"std"`` (sample standard deviation over trials) or ``"ci"`` (the 95 %
            confidence interval of the mean, Student's t). None with one trial.
        reset: keep this reset kind's rows (default: all; several kinds make one series per model and reset).
        unit: keep ``"layer"`` or ``"block"`` rows (needed where the table holds both).

    Returns:
        The figure (``ax.figure`` when ``ax`` is given); nothing is shown or saved.

    Raises:
        ConfigError: (a ValueError where errors.ConfigError derives from it) an unknown ``metric``, ``error``,
            ``reset`` or ``unit``, an empty table or one without a finite value of the metric, or ``ax`` with
            several models.

    Examples:
        >>> import pandas as pd
        >>> from layercrit import plot
        >>> df = pd.DataFrame({"model_id": "m", "layer": ["conv1", "layer1.0.conv1", "fc"] * 2,
        ...                    "trial": [0, 0, 0, 1, 1, 1], "criticality": [10.0, 20.0, 30.0, 12.0, 22.0, 28.0]})
        >>> fig = plot.layers(df)
        >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
        ['[0] stem', '[1.0] conv1 3x3', '[head] fc']
        >>> [float(p.get_height()) for p in fig.axes[0].patches]
        [11.0, 21.0, 29.0]
    """
    _check_error(error)
    table = _table(df, metric, reset, unit)
    if ax is not None and len(table.series) > 1:
        raise ConfigError(f"{{ax}} takes one model's bars, and the table holds {len(table.series)} "
                          f"({_few(table.series)}): leave out {{ax}} (one panel each) or select one model",
                          ("ax",))
    stats = table.stats(error)
    palette = style.stage_colors([s for f in table.layers.values() for s in f["stage"]])
    with style.plain_text():
        if ax is None:
            n_layers = max(len(table.layer_list(s)) for s in table.series)
            width = float(np.clip(0.2 * n_layers, 3.5, 14.0)) + 2.2
            fig = Figure(figsize=(width, 2.3 * len(table.series) + 1.4), layout="constrained")
            axes = list(fig.subplots(len(table.series), 1, sharey=True, squeeze=False)[:, 0])
        else:
            fig, axes = _figure_of(ax), [ax]
        for axis, series in zip(axes, table.series):
            frame = table.layer_list(series).merge(stats[stats["series"] == series], on="layer", how="left")
            _bars(axis, frame, palette, error=any(stats["n"] > 1))
            axis.set_ylabel(table.label, fontsize=FONT + 1)
            if len(table.series) > 1:
                axis.set_title(series, fontsize=FONT + 2, loc="left")
        axes[0].legend(handles=_stage_handles(palette), title="stage", loc="upper left",
                       bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=FONT + 1, title_fontsize=FONT + 2)
        what = table.series[0] + ": " if len(table.series) == 1 else ""
        _title(fig, axes, f"{what}{_name(table.label)} per layer ({table.trials_text(error)})", ax)
    return fig


def heatmap(df: pd.DataFrame | Results, metric: str = "criticality", *, reset: str | None = None,
            unit: str | None = None, cmap: str | None = None, vmin: float | None = None,
            vmax: float | None = None) -> Figure:
    """Models (rows, grouped by category) x layers (columns, network order), coloured by the mean over trials.

    The report's heatmap (:func:`layercrit.report.heatmap.heatmap_figure`): each row's and column's mean ± std
    beside it, category bands, one panel per architecture; cells a model was not measured on stay grey.

    Args:
        df: the tidy table of :func:`layercrit.measure` (or read back from a database or a ``layercrit
            export`` CSV), or a :class:`layercrit.analysis.Results`.
        metric: a metric column (see :data:`METRICS`) or ``"disagreement"`` (100 - ``pred_agreement``).
        reset: keep this reset kind's rows (default: all; several kinds make one row per model and reset).
        unit: keep ``"layer"`` or ``"block"`` rows (needed where the table holds both).
        cmap: a matplotlib or seaborn colormap name (default: the report's, light = low, dark = high).
        vmin: the colour scale's low end (default: 0 for percentages, else the lowest value).
        vmax: the colour scale's high end (default: 100 for percentages, else the highest value).

    Returns:
        The figure; nothing is shown or saved.

    Raises:
        ConfigError: an unknown ``metric``, ``reset`` or ``unit``, or an empty table or one without a finite
            value of the metric.

    Examples:
        >>> import pandas as pd
        >>> from layercrit import plot
        >>> df = pd.DataFrame({"model_id": ["a", "a", "b", "b"], "layer": ["conv1", "fc"] * 2, "trial": 0,
        ...                    "pred_agreement": [90.0, 40.0, 80.0, 70.0]})
        >>> fig = plot.heatmap(df, metric="disagreement")
        >>> fig.axes[0].collections[0].get_array().reshape(2, 2).tolist()
        [[10.0, 60.0], [20.0, 30.0]]
    """
    table = _table(df, metric, reset, unit)
    stats = table.stats("std")
    matrix = stats.pivot(index="series", columns="layer", values="mean")
    categories = list(dict.fromkeys(table.category.values()))  # in order of first appearance
    order = sorted(table.series, key=lambda s: categories.index(table.category[s]))  # grouped, else as given
    archs = list(dict.fromkeys(table.arch[s] for s in order))
    panels = []
    for arch in archs:
        rows = [s for s in order if table.arch[s] == arch]
        frame = table.layers[arch]
        panels.append(Panel(matrix.reindex(index=rows, columns=list(frame["layer"])), row_labels=rows,
                            col_labels=list(frame["label"]), categories=[table.category[s] for s in rows],
                            title=arch if len(archs) > 1 else None))
    if vmin is None or vmax is None:
        values = matrix.to_numpy(dtype=float)
        low, high = (float(np.nanmin(values)), float(np.nanmax(values)))
        if table.label.endswith("[%]"):  # 0-100, or up to 200 where 1 - cosine of logits or features exceeds 100
            low, high = min(low, 0.0), 100.0 if high <= 100.0 else 200.0
        if low == high:
            low, high = low - 0.5, high + 0.5
        vmin = low if vmin is None else vmin
        vmax = high if vmax is None else vmax
    colors = style.category_colors([table.category[s] for s in order], UNCATEGORIZED)
    with style.plain_text():
        return heatmap_figure(panels, colors=colors, cmap=cmap or style.CRITICALITY_CMAP, vmin=vmin, vmax=vmax,
                              title=f"Layer {table.label} ({table.trials_text('std').replace(' ± std', '')})",
                              cbar_label=table.label)


def stages(df: pd.DataFrame | Results, metric: str = "criticality", ax: Axes | None = None, *,
           error: str = "std", reset: str | None = None, unit: str | None = None) -> Figure:
    """The stage profile: one line per model through the network's stages (stem, stage 1-4, head, other).

    A stage's value is the mean over its layers of the layer means over trials (the report's ``stages.csv``).
    The error bar is the spread over trials of the per-trial stage mean.

    Args:
        df: the tidy table of :func:`layercrit.measure` (or read back from a database or a ``layercrit
            export`` CSV), or a :class:`layercrit.analysis.Results`.
        metric: a metric column (see :data:`METRICS`) or ``"disagreement"`` (100 - ``pred_agreement``).
        ax: draw into these axes; default: a new figure.
        error: ``"std"`` (sample standard deviation over trials) or ``"ci"`` (95 % confidence interval of
            the mean, Student's t). None with one trial.
        reset: keep this reset kind's rows (default: all; several kinds make one line per model and reset).
        unit: keep ``"layer"`` or ``"block"`` rows (needed where the table holds both).

    Returns:
        The figure (``ax.figure`` when ``ax`` is given); nothing is shown or saved.

    Raises:
        ConfigError: an unknown ``metric``, ``error``, ``reset`` or ``unit``, or an empty table or one without
            a finite value of the metric.

    Examples:
        >>> import pandas as pd
        >>> from layercrit import plot
        >>> df = pd.DataFrame({"model_id": "m", "layer": ["conv1", "layer1.0.conv1", "layer1.0.conv2", "fc"],
        ...                    "trial": 0, "criticality": [10.0, 20.0, 40.0, 5.0]})
        >>> fig = plot.stages(df)
        >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
        ['stem', 'stage 1', 'head']
        >>> fig.axes[0].lines[0].get_ydata().tolist()
        [10.0, 30.0, 5.0]
    """
    _check_error(error)
    table = _table(df, metric, reset, unit)
    staged = table.rows.merge(pd.concat([f[["layer", "stage"]].assign(series=s) for s in table.series
                                         for f in [table.layer_list(s)]]), on=["series", "layer"])
    layer_means = staged.groupby(["series", "layer", "stage"], sort=False)["value"].mean().reset_index()
    means = stage_table(layer_means.rename(columns={"series": "model_id", "value": "criticality"}), table.series)
    per_trial = staged.groupby(["series", "stage", "trial"])["value"].mean().groupby(level=["series", "stage"])
    spread = per_trial.agg(["std", "count"])
    half = pd.Series(_half_length(spread["std"], spread["count"], error), index=spread.index)
    names = list(means.columns)
    x = np.arange(len(names))
    with style.plain_text():
        fig, ax = _axes(ax, (max(3.6, 0.75 * len(names) + 2.8), 3.2))
        for series in table.series:
            y = means.loc[series].to_numpy(dtype=float)
            err = np.array([half.get((series, s), np.nan) for s in names])
            ax.errorbar(x, y, yerr=np.nan_to_num(err) if np.isfinite(err).any() else None, marker="o",
                        markersize=4, capsize=3, linewidth=1.2, label=series)
        ax.set_xticks(x, names, fontsize=FONT + 1)
        ax.set_xlim(-0.4, len(names) - 0.6)
        ax.set_xlabel("network stage", fontsize=FONT + 1)
        ax.set_ylabel(table.label, fontsize=FONT + 1)
        ax.grid(True, axis="y", color="#eeeeee", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.legend(title="model", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=FONT + 1,
                  title_fontsize=FONT + 2)
        ax.set_title(f"Mean {table.label.split(' [')[0]} per stage ({table.trials_text(error)})", fontsize=FONT + 3)
    return fig


def difference(df: pd.DataFrame | Results, a: str, b: str, metric: str = "criticality", ax: Axes | None = None, *,
               error: str = "std", reset: str | None = None, unit: str | None = None) -> Figure:
    """Two models' per-layer difference, **b minus a** (a is the reference), with the trial spread as error bars.

    Bars over the layers both were measured on, in network order, coloured by stage: above zero, ``b`` has the
    higher value. ``error="std"``: sqrt(s_a² + s_b²), the standard deviation of the difference of one trial
    of each; ``"ci"``: the Welch 95 % confidence interval of the difference of the two means over trials
    (t quantile at the Welch-Satterthwaite degrees of freedom). No error bar where either has a single trial.

    Args:
        df: the tidy table of :func:`layercrit.measure` (or read back from a database or a ``layercrit
            export`` CSV), or a :class:`layercrit.analysis.Results`.
        a: the reference model's id (``"model (reset)"`` where the table holds several resets).
        b: the model compared with it, the same way.
        metric: a metric column (see :data:`METRICS`) or ``"disagreement"`` (100 - ``pred_agreement``).
        ax: draw into these axes; default: a new figure.
        error: ``"std"`` or ``"ci"``, as above.
        reset: keep this reset kind's rows (default: all).
        unit: keep ``"layer"`` or ``"block"`` rows (needed where the table holds both).

    Returns:
        The figure (``ax.figure`` when ``ax`` is given); nothing is shown or saved.

    Raises:
        ConfigError: ``a`` or ``b`` not in the table, the same series twice, no layer in common, an unknown
            ``metric``, ``error``, ``reset`` or ``unit``, or an empty table.

    Examples:
        >>> import pandas as pd
        >>> from layercrit import plot
        >>> df = pd.DataFrame({"model_id": ["a", "a", "b", "b"], "layer": ["conv1", "fc"] * 2, "trial": 0,
        ...                    "criticality": [10.0, 40.0, 25.0, 30.0]})
        >>> fig = plot.difference(df, "a", "b")
        >>> [float(p.get_height()) for p in fig.axes[0].patches]
        [15.0, -10.0]
    """
    _check_error(error)
    table = _table(df, metric, reset, unit)
    for name, value in (("a", a), ("b", b)):
        if value not in table.series:
            hint = " (several resets: name a series 'model (reset)' or pass reset=)" if "(" in table.series[0] else ""
            raise ConfigError(f"{{{name}}}={value!r} is not in the table: use one of {_few(table.series)}{hint}",
                              (name,))
    if a == b:
        raise ConfigError(f"{{a}} and {{b}} are both {a!r}: name two different models", ("a", "b"))
    rows = table.rows
    values = {s: dict(tuple(rows[rows["series"] == s].groupby("layer")["value"])) for s in (a, b)}
    frame = table.layer_list(a)
    frame = frame[frame["layer"].isin(values[a].keys() & values[b].keys())].reset_index(drop=True)
    if frame.empty:
        raise ConfigError(f"{{a}}={a!r} and {{b}}={b!r} have no layer in common: compare models of one "
                          "architecture", ("a", "b"))
    deltas, halves = [], []
    for layer in frame["layer"]:
        va, vb = values[a][layer].to_numpy(float), values[b][layer].to_numpy(float)
        deltas.append(vb.mean() - va.mean())
        if error == "std":
            halves.append(float(np.sqrt(va.var(ddof=1) + vb.var(ddof=1))) if min(len(va), len(vb)) > 1 else np.nan)
        else:
            halves.append(_welch_half(va, vb))
    frame = frame.assign(mean=deltas, err=halves)
    palette = style.stage_colors(list(frame["stage"]))
    with style.plain_text():
        fig, ax = _axes(ax, (float(np.clip(0.2 * len(frame), 3.5, 14.0)) + 2.2, 3.4))
        _bars(ax, frame, palette, error=bool(np.isfinite(frame["err"]).any()))
        ax.axhline(0.0, color="#333333", linewidth=0.8)
        ax.set_ylabel(f"Δ {table.label}\n({b} − {a})", fontsize=FONT + 1)
        ax.legend(handles=_stage_handles(palette), title="stage", loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  frameon=False, fontsize=FONT + 1, title_fontsize=FONT + 2)
        spread = "std" if error == "std" else "Welch 95 % CI"
        ax.set_title(f"{b} minus {a}: {table.label.split(' [')[0]} per layer (error bars: {spread} over trials)",
                     fontsize=FONT + 3)
    return fig


# ---------------------------------------------------------------------------------------------
# The table behind every figure
# ---------------------------------------------------------------------------------------------
def _table(df, metric: str, reset: str | None, unit: str | None) -> _Table:
    own = df.metric if isinstance(df, Results) else None  # a Results' own measure (criticality, disagreement, ...)
    if not isinstance(metric, str) or (metric not in METRICS and metric != own):
        raise ConfigError(f"unknown {{metric}} {metric!r}: use one of {', '.join(METRICS)}", ("metric",))
    if isinstance(df, Results):
        frame, series, category, arch, layer_frames = _from_results(df, metric, reset, unit)
    elif isinstance(df, pd.DataFrame):
        frame, series, category, arch, layer_frames = _from_frame(df, metric, reset, unit)
    else:
        raise ConfigError(f"{{df}} must be a DataFrame (lc.measure's table, an export) or a Results, not "
                          f"{type(df).__name__}", ("df",))
    doubled = frame.duplicated(["series", "layer", "trial"], keep=False)
    if doubled.any():  # a plot would average them into one bar or cell without a word
        first = frame[doubled].iloc[0]
        raise ConfigError(f"{{df}} has {int(doubled.sum())} rows that share a model, layer and trial (e.g. "
                          f"{first['series']}, {first['layer']}, trial {first['trial']}): two models measured "
                          "under one model_id (give each its own: ModelBundle.from_module(net, model_id=...) or "
                          "create_model(..., name=...)), or layer names that "
                          "differ only by a wrapper prefix (model.)", ("df",))
    values = pd.to_numeric(frame["value"], errors="coerce").astype(float)
    finite = np.isfinite(values.to_numpy())
    if not finite.any():
        raise ConfigError(f"{{df}} holds no finite {metric!r} value ({len(frame)} row(s), all NaN or infinite): "
                          "nothing to plot", ("df",))
    if not finite.all():
        counts = frame.loc[~finite, "series"].value_counts()
        shown = ", ".join(f"{s} ({n})" for s, n in list(counts.items())[:5]) + (" ..." if len(counts) > 5 else "")
        warnings.warn(f"{int((~finite).sum())} row(s) with a non-finite {metric} (NaN or Inf) left out: {shown}",
                      ReportWarning, stacklevel=3)
    frame = frame.assign(value=values)[finite].reset_index(drop=True)
    kept = set(frame["series"])
    series = [s for s in series if s in kept]
    label = _LABELS.get(metric, f"{df.metric_label} [%]" if metric == own else metric)
    return _Table(rows=frame, series=series, category={s: category[s] for s in series},
                  arch={s: arch[s] for s in series}, layers=layer_frames, metric=metric, label=label)


def _from_frame(df: pd.DataFrame, metric: str, reset: str | None, unit: str | None):
    """A tidy table (measure, a database's, an export, the study's paper layout): filtered, one value column."""
    if df.empty:
        raise ConfigError("{df} is empty: nothing to plot", ("df",))
    missing = [c for c in ("model_id", "layer", "trial") if c not in df.columns]
    if missing:
        raise ConfigError(f"{{df}} lacks the column(s) {', '.join(missing)}: pass the table lc.measure returns, "
                          "a `layercrit export` CSV or a Results", ("df",))
    df = _pick(df, "unit", unit, several=False)
    df = _pick(df, "reset", reset, several=True)
    if metric == "disagreement" and "pred_agreement" in df.columns:
        value = 100.0 - pd.to_numeric(df["pred_agreement"], errors="coerce")
    elif metric in df.columns:
        value = df[metric]
    elif metric == "criticality" and "pred_cos_sim" in df.columns:  # the study's paper layout
        value = 100.0 * (1.0 - pd.to_numeric(df["pred_cos_sim"], errors="coerce"))
    else:
        need = "pred_agreement" if metric == "disagreement" else metric
        have = [c for c in df.columns if c in METRICS]
        raise ConfigError(f"{{metric}} {metric!r} needs a {need} column, which {{df}} lacks (it has "
                          f"{', '.join(have) or 'no metric column'})", ("metric", "df"))
    model = df["model_id"].astype(str)
    several = "reset" in df.columns and df["reset"].nunique() > 1
    series = model + " (" + df["reset"].astype(str) + ")" if several else model
    frame = pd.DataFrame({"series": series.to_numpy(), "model_id": model.to_numpy(),
                          "layer": df["layer"].astype(str).map(strip_prefix).to_numpy(),
                          "layer_index": df["layer_index"].to_numpy() if "layer_index" in df.columns else np.nan,
                          "layer_type": df["layer_type"].to_numpy() if "layer_type" in df.columns else None,
                          "trial": df["trial"].to_numpy(), "value": value.to_numpy()})
    names = list(dict.fromkeys(frame["series"]))
    category = {s: UNCATEGORIZED for s in names}
    if "category" in df.columns:
        known = pd.Series(df["category"].to_numpy(), index=frame["series"]).dropna()
        category.update({str(s): str(c) for s, c in known.groupby(level=0).first().items()})
    # one architecture group per set of layer names (forward order and stages computed per group)
    arch = architecture_groups(frame.rename(columns={"model_id": "model", "series": "model_id"}))
    layer_frames = {}
    for group in dict.fromkeys(arch[s] for s in names):
        members = frame[frame["series"].map(arch) == group]
        layer_frames[group] = layer_frame(members.drop(columns="model_id").rename(columns={"series": "model_id"}))
    return frame, names, category, arch, layer_frames


def _from_results(results: Results, metric: str, reset: str | None, unit: str | None):
    """A Results' rows: its own metric (in the criticality column), top1_acc, recovered_acc."""
    if reset is not None and reset != results.reset:
        raise ConfigError(f"{{reset}}={reset!r}: these results hold the {results.reset!r} resets only (load "
                          "others with load_results(..., reset=...))", ("reset",))
    if unit is not None:
        raise ConfigError("{unit}: a Results holds the unit it was loaded with (load_results(..., unit=...)); "
                          "leave it out", ("unit",))
    columns = {results.metric: "criticality", "top1_acc": "top1_acc", "recovered_acc": "recovered_acc"}
    if metric not in columns:
        raise ConfigError(f"{{metric}} {metric!r} is not in these results (loaded with metric="
                          f"{results.metric!r}): use {', '.join(columns)}, load_results(..., metric=...), or "
                          "the tidy table of lc.measure / ResultStore.results()", ("metric",))
    rows = results.rows
    if rows.empty:
        raise ConfigError("{df} holds no rows: nothing to plot", ("df",))
    frame = pd.DataFrame({"series": rows["model_id"].astype(str).to_numpy(), "layer": rows["layer"].to_numpy(),
                          "trial": rows["trial"].to_numpy(), "value": rows[columns[metric]].to_numpy()})
    models = results.models
    names = [str(m) for m in models["model_id"]]
    category = dict(zip(names, models["category"].astype(str)))
    arch = dict(zip(names, models["arch"].astype(str)))
    layer_frames = {str(a): g[["layer", "label", "stage"]].reset_index(drop=True)
                    for a, g in results.layers.groupby("arch", sort=False)}
    return frame, names, category, arch, layer_frames


def _pick(df: pd.DataFrame, column: str, value: str | None, several: bool) -> pd.DataFrame:
    """Keep ``column == value``; without a value, all rows (``several``) or the only kind there is."""
    if column not in df.columns:
        if value is not None:
            raise ConfigError(f"{{{column}}}={value!r}: the table has no {column} column", (column,))
        return df
    kinds = sorted(str(k) for k in df[column].dropna().unique())
    if value is None:
        if len(kinds) > 1 and not several:
            raise ConfigError(f"the table holds {' and '.join(kinds)} rows: pick one with {{{column}}}=",
                              (column,))
        return df
    if value not in kinds:
        raise ConfigError(f"{{{column}}}={value!r} is not in the table (it has {', '.join(kinds)})", (column,))
    return df[df[column] == value]


# ---------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------
def _half_length(std, n, error: str) -> np.ndarray:
    """The error bar's half-length per row: the std itself, or the 95 % CI half-width std * t(0.975, n-1) / sqrt(n);
    NaN where n < 2."""
    std, n = np.asarray(std, dtype=float), np.asarray(n, dtype=float)
    if error == "std":
        return np.where(n > 1, std, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = _stats.t.ppf(0.975, np.where(n > 1, n - 1, np.nan))
        return t * std / np.sqrt(n)


def _welch_half(a: np.ndarray, b: np.ndarray) -> float:
    """Half-width of the Welch 95 % confidence interval of mean(b) - mean(a); NaN where either has one value, 0
    where both are constant."""
    if min(len(a), len(b)) < 2:
        return np.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0.0:
        return 0.0
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return float(_stats.t.ppf(0.975, dof) * np.sqrt(va + vb))


def _bars(ax: Axes, frame: pd.DataFrame, palette: dict[str, str], error: bool) -> None:
    """``frame``: layer, label, stage, mean, err in network order; a bar for each measured layer, a tick for every
    layer."""
    x = np.arange(len(frame))
    shown = frame["mean"].notna().to_numpy()
    err = np.nan_to_num(frame["err"].to_numpy(dtype=float)[shown]) if error else None
    ax.bar(x[shown], frame["mean"].to_numpy(dtype=float)[shown], color=[palette[s] for s in frame["stage"][shown]],
           yerr=err, error_kw={"elinewidth": 0.7, "capsize": 1.5, "ecolor": "#333333"})
    ax.set_xticks(x, list(frame["label"]), rotation=90, fontsize=FONT)
    ax.set_xlim(-0.6, len(frame) - 0.4)
    ax.tick_params(axis="y", labelsize=FONT)
    ax.grid(True, axis="y", color="#eeeeee", linewidth=0.6)
    ax.set_axisbelow(True)


def _stage_handles(palette: dict[str, str]) -> list[Patch]:
    return [Patch(facecolor=color, label=stage) for stage, color in palette.items()]


def _axes(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return _figure_of(ax), ax
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.add_subplot()


def _figure_of(ax: Axes) -> Figure:
    """The figure ``ax`` is drawn on (the root figure where ``ax`` lies in a subfigure)."""
    fig = ax.figure
    while not isinstance(fig, Figure) and fig is not None:
        fig = fig.figure  # a SubFigure's parent
    assert isinstance(fig, Figure)
    return fig


def _title(fig: Figure, axes: Sequence[Axes], text: str, given: Axes | None) -> None:
    """The figure's title, or the given axes' title (a figure the caller owns keeps its own)."""
    if given is not None:
        given.set_title(text, fontsize=FONT + 3)
    elif len(axes) == 1:
        axes[0].set_title(text, fontsize=FONT + 3)
    else:
        fig.suptitle(text, fontsize=FONT + 3)


def _name(label: str) -> str:
    """'criticality [%]' -> 'Criticality'."""
    name = label.split(" [")[0]
    return name[:1].upper() + name[1:]


def _check_error(error: str) -> None:
    if error not in ERRORS:
        raise ConfigError(f"unknown {{error}} {error!r}: use 'std' (standard deviation over trials) or 'ci' "
                          "(95 % confidence interval of the mean)", ("error",))


def _few(names: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


__all__ = ["ERRORS", "METRICS", "difference", "heatmap", "layers", "stages"]
