"""layercrit.plot: figures from hand-built tidy tables (and one real measurement), checked by what they draw:
bar heights against the means computed here, error bar lengths, tick labels in network order, heatmap cells,
the difference's sign; and the errors that name the Python parameter."""
from __future__ import annotations

import doctest
import subprocess
import sys
import warnings

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import QuadMesh  # noqa: E402
from matplotlib.container import BarContainer  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy import stats  # noqa: E402

from layercrit import plot  # noqa: E402
from layercrit.analysis import ReportWarning, load_results  # noqa: E402
from layercrit.errors import ConfigError  # noqa: E402

LAYERS = ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1", "fc"]  # network order
LABELS = ["[0] stem", "[1.0] conv1 3x3", "[1.0] conv2 3x3", "[2.0] conv1 3x3", "[head] fc"]
STAGES = ["stem", "stage 1", "stage 1", "stage 2", "head"]
TRIALS = 3
# model -> category; "aug" comes first in the table but the heatmap groups rows by category in order of appearance
MODELS = {"aug": "augmentation", "base": "baseline", "aug2": "augmentation"}


def _values(seed: int = 0) -> np.ndarray:
    """criticality[model, layer, trial]"""
    return np.random.default_rng(seed).uniform(0.0, 90.0, (len(MODELS), len(LAYERS), TRIALS))


CRIT = _values()
AGREE = 100.0 - _values(1)


def tidy(models=tuple(MODELS), reset: str = "random", crit: np.ndarray = CRIT) -> pd.DataFrame:
    """A tidy table like lc.measure's, each model's rows shuffled: the figures must find network order themselves
    (models stay in the order they were measured in, which is the figures' order)."""
    rows = []
    for i, model in enumerate(MODELS):
        if model not in models:
            continue
        for j, layer in enumerate(LAYERS):
            for t in range(TRIALS):
                rows.append({"model_id": model, "category": MODELS[model], "layer": layer, "unit": "layer",
                             "reset": reset, "trial": t, "criticality": crit[i, j, t],
                             "pred_agreement": AGREE[i, j, t], "top1_acc": 50.0 + t})
    return pd.DataFrame(rows).groupby("model_id", sort=False).sample(frac=1.0, random_state=1).reset_index(drop=True)


def bar_heights(ax) -> list[float]:
    return [float(p.get_height()) for p in ax.patches]


def bar_errors(ax) -> np.ndarray:
    """Half-lengths of the error bars of the axes' (first) bar chart."""
    bars = next(c for c in ax.containers if isinstance(c, BarContainer))
    segments = bars.errorbar.lines[2][0].get_segments()
    return np.array([(s[1][1] - s[0][1]) / 2 for s in segments])


def tick_labels(ax, axis: str = "x") -> list[str]:
    return [t.get_text() for t in (ax.get_xticklabels() if axis == "x" else ax.get_yticklabels())]


def heat_axes(fig: Figure):
    """The heatmap's own axes (the colour bar has a mesh too, but no tick labels of layers)."""
    return [a for a in fig.axes if any(isinstance(c, QuadMesh) for c in a.collections) and a.get_xticklabels()
            and tick_labels(a)[0].startswith("[")]


# ---------------------------------------------------------------------------------------------
# layers
# ---------------------------------------------------------------------------------------------
def test_layers_one_model_bars_are_trial_means_in_network_order():
    fig = plot.layers(tidy(["base"]))
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert tick_labels(ax) == LABELS
    np.testing.assert_allclose(bar_heights(ax), CRIT[1].mean(axis=1))
    np.testing.assert_allclose(bar_errors(ax), CRIT[1].std(axis=1, ddof=1))  # std over trials
    assert ax.get_ylabel() == "criticality [%]" and "mean ± std over 3 trials" in ax.get_title()
    colors = [to_hex(p.get_facecolor()) for p in ax.patches]
    assert colors[1] == colors[2] and len(set(colors)) == 4  # one colour per stage: stage 1 twice
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["stem", "stage 1", "stage 2", "head"]


def test_layers_ci_error_bars_are_student_t_intervals():
    ax = plot.layers(tidy(["base"]), error="ci").axes[0]
    half = stats.t.ppf(0.975, TRIALS - 1) * CRIT[1].std(axis=1, ddof=1) / np.sqrt(TRIALS)
    np.testing.assert_allclose(bar_errors(ax), half)
    assert "95 % CI" in ax.get_title()


def test_layers_several_models_one_panel_each_shared_value_axis():
    fig = plot.layers(tidy(), metric="disagreement")
    assert [a.get_title(loc="left") for a in fig.axes] == list(MODELS)
    for i, ax in enumerate(fig.axes):
        assert tick_labels(ax) == LABELS and ax.get_ylabel() == "top-1 disagreement [%]"
        np.testing.assert_allclose(bar_heights(ax), (100.0 - AGREE[i]).mean(axis=1))
    assert len({a.get_ylim() for a in fig.axes}) == 1
    assert fig.get_suptitle().startswith("Top-1 disagreement per layer")


def test_layers_into_given_axes_one_model_only():
    fig = Figure()
    ax = fig.add_subplot()
    assert plot.layers(tidy(["aug"]), metric="top1_acc", ax=ax) is fig
    np.testing.assert_allclose(bar_heights(ax), [51.0] * len(LAYERS))  # trials 0, 1, 2 -> 50, 51, 52
    with pytest.raises(ConfigError) as e:
        plot.layers(tidy(), ax=ax)
    assert e.value.fields == ("ax",) and "ax takes one model's bars" in str(e.value)


def test_layers_leave_out_nonfinite_rows_with_a_warning_never_as_zero():
    df = tidy(["base"])
    first = df.index[(df["layer"] == "fc") & (df["trial"] == 0)][0]
    second = df.index[(df["layer"] == "conv1") & (df["trial"] == 1)][0]
    df.loc[first, "criticality"], df.loc[second, "criticality"] = np.nan, np.inf
    with pytest.warns(ReportWarning, match=r"2 row\(s\) with a non-finite criticality"):
        ax = plot.layers(df).axes[0]
    expected = CRIT[1].mean(axis=1)
    expected[-1], expected[0] = CRIT[1, -1, 1:].mean(), CRIT[1, 0, [0, 2]].mean()
    np.testing.assert_allclose(bar_heights(ax), expected)


def test_a_layer_a_model_lacks_is_a_gap_not_a_bar():
    df = tidy()
    df = df[~((df["model_id"] == "aug2") & (df["layer"] == "layer1.0.conv2"))]
    fig = plot.layers(df)
    assert tick_labels(fig.axes[2]) == LABELS and len(fig.axes[2].patches) == len(LAYERS) - 1
    np.testing.assert_allclose([p.get_x() + p.get_width() / 2 for p in fig.axes[2].patches], [0, 1, 3, 4])


# ---------------------------------------------------------------------------------------------
# heatmap
# ---------------------------------------------------------------------------------------------
def test_heatmap_cells_are_means_rows_grouped_by_category():
    fig = plot.heatmap(tidy())
    (ax,) = heat_axes(fig)
    assert tick_labels(ax) == LABELS
    assert tick_labels(ax, "y") == ["aug", "aug2", "base"]  # augmentation (first seen) before baseline
    cells = ax.collections[0].get_array().reshape(3, len(LAYERS))
    np.testing.assert_allclose(cells, CRIT[[0, 2, 1]].mean(axis=2))
    assert fig.get_suptitle() == "Layer criticality [%] (mean over 3 trials)"


def test_heatmap_disagreement_and_missing_cells():
    df = tidy()
    df = df[~((df["model_id"] == "base") & (df["layer"] == "fc"))]
    (ax,) = heat_axes(plot.heatmap(df, metric="disagreement"))
    cells = ax.collections[0].get_array().reshape(3, len(LAYERS))
    expected = (100.0 - AGREE[[0, 2, 1]]).mean(axis=2)
    assert cells.mask[2, -1] and not cells.mask[:2].any()  # base has no fc: empty (grey), not 0
    np.testing.assert_allclose(cells[:2], expected[:2])
    np.testing.assert_allclose(cells[2, :-1], expected[2, :-1])


def test_heatmap_of_results_is_their_matrix(tmp_path):
    """A Results: its display order and its matrix, drawn by the report's heatmap_figure."""
    csv = write_paper_csv(tmp_path / "raw.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReportWarning)  # no category, no accuracy: the loader says so
        results = load_results(paper_csvs=[csv])
    (ax,) = heat_axes(plot.heatmap(results))
    matrix = results.matrix()
    cells = ax.collections[0].get_array().reshape(matrix.shape)
    np.testing.assert_allclose(cells, matrix.to_numpy())
    assert tick_labels(ax, "y") == list(matrix.index)


# ---------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------
def test_stages_lines_are_means_of_layer_means_per_stage():
    fig = plot.stages(tidy(), error="std")
    ax = fig.axes[0]
    names = ["stem", "stage 1", "stage 2", "head"]
    assert tick_labels(ax) == names and ax.get_xlabel() == "network stage"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(MODELS)
    for i, container in enumerate(ax.containers):
        layer_means = CRIT[i].mean(axis=1)
        expected = [layer_means[[j for j, s in enumerate(STAGES) if s == st]].mean() for st in names]
        np.testing.assert_allclose(container.lines[0].get_ydata(), expected)
        # error bar: std over trials of the per-trial stage mean
        per_trial = np.array([[CRIT[i, [j for j, s in enumerate(STAGES) if s == st], t].mean()
                               for t in range(TRIALS)] for st in names])
        segments = container.lines[2][0].get_segments()
        np.testing.assert_allclose([(s[1][1] - s[0][1]) / 2 for s in segments], per_trial.std(axis=1, ddof=1))


# ---------------------------------------------------------------------------------------------
# difference
# ---------------------------------------------------------------------------------------------
def test_difference_is_b_minus_a_with_the_trial_spread():
    crit = CRIT.copy()
    crit[1, 0] = crit[0, 0] + 20.0  # base above aug on the stem ...
    crit[1, -1] = crit[0, -1] - 20.0  # ... below it on the head
    df = tidy(crit=crit)
    ax = plot.difference(df, "aug", "base").axes[0]
    delta = crit[1].mean(axis=1) - crit[0].mean(axis=1)
    np.testing.assert_allclose(bar_heights(ax), delta)
    assert bar_heights(ax)[0] == pytest.approx(20.0) and bar_heights(ax)[-1] == pytest.approx(-20.0)
    np.testing.assert_allclose(bar_errors(ax), np.sqrt(crit[0].var(axis=1, ddof=1) + crit[1].var(axis=1, ddof=1)))
    assert tick_labels(ax) == LABELS and "base − aug" in ax.get_ylabel()
    assert ax.get_title().startswith("base minus aug")
    reverse = plot.difference(df, "base", "aug").axes[0]
    np.testing.assert_allclose(bar_heights(reverse), -delta)


def test_difference_ci_is_the_welch_interval():
    ax = plot.difference(tidy(), "aug", "base", error="ci").axes[0]
    expected = []
    for j in range(len(LAYERS)):
        ci = stats.ttest_ind(CRIT[1, j], CRIT[0, j], equal_var=False).confidence_interval(0.95)
        expected.append((ci.high - ci.low) / 2)
    np.testing.assert_allclose(bar_errors(ax), expected)


def test_difference_common_layers_only_and_resets_as_series():
    df = pd.concat([tidy(["base"]), tidy(["base"], reset="zero", crit=CRIT[[0, 0, 0]])], ignore_index=True)
    df = df[~((df["reset"] == "zero") & (df["layer"] == "layer2.0.conv1"))]
    ax = plot.difference(df, "base (random)", "base (zero)").axes[0]
    assert tick_labels(ax) == [lab for lab in LABELS if lab != "[2.0] conv1 3x3"]
    np.testing.assert_allclose(bar_heights(ax), np.delete(CRIT[0].mean(axis=1) - CRIT[1].mean(axis=1), 3))
    fig = plot.layers(df)  # two resets of one model: two panels
    assert [a.get_title(loc="left") for a in fig.axes] == ["base (random)", "base (zero)"]
    one = plot.layers(df, reset="zero")
    assert len(one.axes) == 1 and one.axes[0].get_title().startswith("base: ")


# ---------------------------------------------------------------------------------------------
# other inputs: the study's paper layout, a Results, a real measurement
# ---------------------------------------------------------------------------------------------
def write_paper_csv(path):
    rows = [{"model_id": m, "layer": "model." + layer, "trial": t, "pred_cos_sim": 1 - CRIT[i, j, t] / 100,
             "top1_acc": 60.0, "recovered_acc": 0.8}
            for i, m in enumerate(MODELS) for j, layer in enumerate(LAYERS) for t in range(TRIALS)]
    pd.DataFrame(rows).groupby("model_id", sort=False).sample(frac=1.0, random_state=2).to_csv(path, index=False)
    return path


def test_paper_layout_and_results_give_the_same_bars(tmp_path):
    csv = write_paper_csv(tmp_path / "raw.csv")
    from_csv = plot.layers(pd.read_csv(csv)).axes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReportWarning)  # no category, no accuracy: the loader says so
        results = load_results(paper_csvs=[csv])
    from_results = plot.layers(results).axes
    order = list(results.models["model_id"])
    assert [a.get_title(loc="left") for a in from_results] == order
    for ax in from_results:
        i = list(MODELS).index(ax.get_title(loc="left"))
        assert tick_labels(ax) == LABELS
        np.testing.assert_allclose(bar_heights(ax), CRIT[i].mean(axis=1))
    for i, ax in enumerate(from_csv):
        np.testing.assert_allclose(bar_heights(ax), CRIT[i].mean(axis=1))
    with pytest.raises(ConfigError) as e:  # a Results holds its own measure, top1_acc and recovered_acc only
        plot.layers(results, metric="disagreement")
    assert e.value.fields == ("metric",) and "load_results(..., metric=...)" in str(e.value)


def test_a_real_measurement(tiny_model, tiny_data):
    import layercrit as lc

    module, factory = tiny_model
    bundle = lc.ModelBundle.from_module(module, factory, normalize=None, model_id="tiny")
    df = lc.measure(bundle, tiny_data, trials=2, progress=False)
    ax = lc.plot.layers(df).axes[0]
    assert tick_labels(ax) == ["[0] stem", "conv2", "[head] fc"]  # forward order; the last Linear is the head
    means = df.groupby("layer").criticality.mean()
    np.testing.assert_allclose(bar_heights(ax), means[["conv1", "conv2", "fc"]])
    np.testing.assert_allclose(bar_errors(ax), df.groupby("layer").criticality.std()[["conv1", "conv2", "fc"]])


# ---------------------------------------------------------------------------------------------
# errors: each names the Python parameter
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, field, text", [
    (lambda: plot.layers(tidy(), metric="crit"), "metric", "unknown metric 'crit'"),
    (lambda: plot.heatmap(tidy(), metric="n_samples"), "metric", "unknown metric"),
    (lambda: plot.stages(tidy(), error="sem"), "error", "unknown error 'sem'"),
    (lambda: plot.layers(pd.DataFrame()), "df", "df is empty"),
    (lambda: plot.layers(tidy().assign(criticality=np.nan)), "df", "df holds no finite 'criticality'"),
    (lambda: plot.layers(tidy().drop(columns="pred_agreement"), metric="disagreement"), "metric",
     "needs a pred_agreement column"),
    (lambda: plot.layers(tidy().drop(columns="trial")), "df", "lacks the column(s) trial"),
    (lambda: plot.layers([1, 2]), "df", "must be a DataFrame"),
    (lambda: plot.layers(tidy(), reset="zero"), "reset", "reset='zero' is not in the table"),
    (lambda: plot.layers(pd.concat([tidy(), tidy().assign(unit="block")])), "unit", "pick one with unit="),
    (lambda: plot.difference(tidy(), "aug", "nope"), "b", "b='nope' is not in the table"),
    (lambda: plot.difference(tidy(), "aug", "aug"), "a", "are both 'aug'"),
])
def test_bad_arguments_name_the_parameter(call, field, text):
    with pytest.raises(ConfigError) as e, warnings.catch_warnings():
        warnings.simplefilter("ignore", ReportWarning)
        call()
    assert e.value.field == field and text in str(e.value), str(e.value)


def test_difference_without_common_layers():
    df = pd.concat([tidy(["aug"]), tidy(["base"]).assign(layer=lambda d: "other." + d["layer"])])
    with pytest.raises(ConfigError, match="no layer in common") as e:
        plot.difference(df, "aug", "base")
    assert e.value.fields == ("a", "b")


# ---------------------------------------------------------------------------------------------
# the module itself
# ---------------------------------------------------------------------------------------------
def test_docstring_examples_run():
    import layercrit.report.plot as module

    result = doctest.testmod(module)
    assert result.attempted >= 4 * 3 and result.failed == 0
    for name in module.__all__:
        obj = getattr(module, name)
        if callable(obj):
            assert all(s in obj.__doc__ for s in ("Args:", "Returns:", "Examples:")), name


def test_imports_stay_light():
    """`import layercrit` loads no matplotlib; `layercrit.plot` loads matplotlib but no torch."""
    code = ("import sys, layercrit as lc\n"
            "assert 'matplotlib' not in sys.modules\n"
            "lc.plot.layers\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'timm')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


def test_rows_that_share_a_model_layer_and_trial_are_refused_not_averaged():
    one = tidy(models=("base",))
    twice = pd.concat([one, one.assign(criticality=one["criticality"] + 40)])  # two networks under one model_id
    for draw in (plot.layers, plot.heatmap, plot.stages):
        with pytest.raises(ConfigError, match="share a model, layer and trial") as e:
            draw(twice)
        assert e.value.fields == ("df",)
    prefixed = pd.concat([one, one[one["layer"] == "fc"].assign(layer="model.fc")])  # a wrapper's name for fc
    with pytest.raises(ConfigError, match="wrapper prefix"):
        plot.layers(prefixed)


def test_heatmap_scale_reaches_200_where_one_minus_cosine_does():
    df = tidy(models=("base",))
    df.loc[df["layer"] == "fc", "criticality"] = 190.0  # logits or features: 1 - cosine up to 2
    (ax,) = heat_axes(plot.heatmap(df))
    assert ax.collections[0].get_clim() == (0.0, 200.0)
    (ax,) = heat_axes(plot.heatmap(tidy(models=("base",))))
    assert ax.collections[0].get_clim() == (0.0, 100.0)
