"""layercrit report: numbers from hand-built raw results, complete reports from measured databases,
metadata precedence, bad input, and the interactive page in a real headless Chromium."""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy import stats

import layercrit as lc
from conftest import ROOT, TinyCNN, run_cli
from layercrit.analysis import ReportWarning, layer_frame, load_results
from layercrit.store import PAPER_COLUMNS

REPORT_FILES = ["heatmap.png", "heatmap.pdf", "delta.png", "delta.pdf", "std.png", "std.pdf",
                "accuracy_vs_criticality.png", "accuracy_vs_criticality.pdf", "epsilon.png", "epsilon.pdf",
                "stages.csv", "stages.md", "summary.json", "index.html"]

# ---------------------------------------------------------------------------------------------
# A raw-results CSV in the original study's layout, with known values
# ---------------------------------------------------------------------------------------------
LAYERS = ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.0.conv3", "layer1.0.downsample.0",
          "layer2.0.conv1", "layer3.0.conv2", "layer4.0.conv3", "fc"]  # network order
STAGE = ["stem", "stage 1", "stage 1", "stage 1", "stage 1", "stage 2", "stage 3", "stage 4", "head"]
LABELS = ["[0] stem", "[1.0] conv1 1x1", "[1.0] conv2 3x3", "[1.0] conv3 1x1", "[1.0] downsample",
          "[2.0] conv1 1x1", "[3.0] conv2 3x3", "[4.0] conv3 1x1", "[head] fc"]
# model id -> category, accuracy, epsilon, norm, display name ("" = none: the id is shown)
MODELS = {
    "toy_base": ("baseline", 76.0, np.nan, "", "Toy baseline"),
    "toy_adv_eps3": ("adversarial training", 62.0, 3.0, "l2", ""),
    "toy_adv_eps1": ("adversarial training", 70.0, 1.0, "l2", ""),
    "toy_aug_b": ("augmentation", 78.5, np.nan, "", ""),
    "toy_aug_a": ("augmentation", 77.0, np.nan, "", ""),
    "toy_ssl": ("self-supervised (linear probe)", 74.0, np.nan, "", ""),
}
IDS = list(MODELS)
DISPLAY_ORDER = ["toy_base", "toy_adv_eps1", "toy_adv_eps3", "toy_aug_a", "toy_aug_b", "toy_ssl"]
TRIALS = 3


def _cosines() -> np.ndarray:
    """pred_cos_sim[model, layer, trial]; the baseline is exactly 10 % critical everywhere."""
    cos = np.random.default_rng(3).uniform(0.2, 0.99, (len(IDS), len(LAYERS), TRIALS))
    cos[0] = 0.9
    return cos


COS = _cosines()
TOP1 = 80.0 * COS  # any values: the report only averages them


def _expected():
    crit = 100.0 * (1.0 - COS)
    layer_mean, layer_std = crit.mean(axis=2), crit.std(axis=2, ddof=1)
    avg, std = layer_mean.mean(axis=1), layer_mean.std(axis=1, ddof=1)
    acc = np.array([MODELS[m][1] for m in IDS])
    stage_names = ["stem", "stage 1", "stage 2", "stage 3", "stage 4", "head"]
    stages = {s: layer_mean[:, [j for j, t in enumerate(STAGE) if t == s]].mean(axis=1) for s in stage_names}
    return layer_mean, layer_std, avg, std, acc, stages


def write_paper_csv(path: Path, ids=IDS) -> Path:
    rows = []
    for i, model in enumerate(IDS):
        if model not in ids:
            continue
        for j, layer in enumerate(LAYERS):
            for t in range(TRIALS):
                rows.append({"top1_acc": TOP1[i, j, t], "top5_acc": 95.0, "loss": 1.5, "batch_acc": np.nan,
                             "layer": "model." + layer, "pred_cos_sim": COS[i, j, t], "pred_l1_err": 0.1,
                             "pred_l2_err": 0.1, "pred_ce_loss": 2.0, "trial": float(t),
                             "recovered_acc": TOP1[i, j, t] / MODELS[model][1], "model_id": model})
    frame = pd.DataFrame(rows, columns=PAPER_COLUMNS)
    # shuffled: the report must find network order and model grouping itself
    frame.sample(frac=1.0, random_state=0).to_csv(path, index=False)
    return path


def write_metadata(path: Path) -> Path:
    pd.DataFrame([{"model_id": m, "category": c, "accuracy": a, "epsilon": e, "norm": n, "display_name": d}
                  for m, (c, a, e, n, d) in MODELS.items()]).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def paper_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    csv, meta, out = write_paper_csv(root / "raw.csv"), write_metadata(root / "meta.csv"), root / "report"
    proc = run_cli("report", "--paper-csv", str(csv), "--metadata", str(meta), "--out", str(out), check=True)
    return out, proc


def test_paper_csv_report_numbers(paper_report):
    out, proc = paper_report
    layer_mean, _, avg, std, acc, stages = _expected()
    for name in REPORT_FILES:
        assert (out / name).stat().st_size > 0, name
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "delta.pdf").read_bytes()[:5] == b"%PDF-"
    assert "baseline: toy_base" in proc.stdout  # chosen as the only model of category baseline, and said so
    assert proc.stderr == ""  # complete metadata: no warning

    s = json.loads((out / "summary.json").read_text())
    assert s["baseline"] == "toy_base"
    assert s["layers"] == LAYERS  # network order, although the CSV rows are shuffled
    assert list(s["models"]) == DISPLAY_ORDER  # grouped by category, baseline first, epsilon ascending
    for i, model in enumerate(IDS):
        got = s["models"][model]
        assert got["category"] == MODELS[model][0]
        assert got["accuracy"] == MODELS[model][1]  # imported CSV: accuracy from metadata
        assert got["avg_criticality"] == pytest.approx(avg[i], abs=1e-9)
        assert got["std_criticality"] == pytest.approx(std[i], abs=1e-9)
        assert (got["n_layers"], got["n_trials"]) == (len(LAYERS), TRIALS)
        for stage, values in stages.items():
            assert got["stages"][stage] == pytest.approx(values[i], abs=1e-9)
    assert s["models"]["toy_base"]["avg_criticality"] == pytest.approx(10.0)

    for category in ("adversarial training", "augmentation"):
        members = [i for i, m in enumerate(IDS) if MODELS[m][0] == category]
        got = s["categories"][category]
        assert got["n"] == 2
        assert got["mean"] == pytest.approx(avg[members].mean())
        assert got["std"] == pytest.approx(avg[members].std(ddof=1))

    keep = np.array([MODELS[m][0] != "adversarial training" for m in IDS])
    for key, mask in (("all", np.ones(len(IDS), bool)), ("without_adversarial training", keep)):
        rho, p_rho = stats.spearmanr(acc[mask], avg[mask])
        tau, p_tau = stats.kendalltau(acc[mask], avg[mask])
        c = s["correlations"][key]
        assert c["spearman"]["rho"] == pytest.approx(rho) and c["spearman"]["p"] == pytest.approx(p_rho)
        assert c["kendall"]["tau"] == pytest.approx(tau) and c["kendall"]["p"] == pytest.approx(p_tau)

    table = pd.read_csv(out / "stages.csv")
    assert list(table.columns) == ["kind", "name", "category", "n_models", "avg", "avg_std", "stem", "stage 1",
                                   "stage 2", "stage 3", "stage 4", "head"]
    by_model = table[table["kind"] == "model"].set_index("name")
    for i, model in enumerate(IDS):
        assert by_model.at[model, "avg"] == pytest.approx(avg[i])
        for stage, values in stages.items():
            assert by_model.at[model, stage] == pytest.approx(values[i])
    assert by_model["avg_std"].isna().all()
    by_cat = table[table["kind"] == "category"].set_index("name")
    aug = [i for i, m in enumerate(IDS) if MODELS[m][0] == "augmentation"]
    assert by_cat.at["augmentation", "stage 3"] == pytest.approx(stages["stage 3"][aug].mean())
    assert by_cat.at["augmentation", "avg"] == pytest.approx(avg[aug].mean())
    assert by_cat.at["augmentation", "avg_std"] == pytest.approx(avg[aug].std(ddof=1))
    assert by_cat.at["augmentation", "n_models"] == 2
    md = (out / "stages.md").read_text()
    assert "| category | n_models | avg | avg std | stem | stage 1 | stage 2 | stage 3 | stage 4 | head |" in md
    assert f"| Toy baseline | baseline | {10.0:.1f} |" in md  # toy_base: average 10.0


def test_report_rerun_rewrites_identical_files(paper_report, tmp_path):
    """The same results give the same files byte for byte (PDFs without a creation date), so a committed report
    diffs clean when it is remade; only the page's "generated" line may change."""
    out, _ = paper_report
    root = out.parent
    again = tmp_path / "again"
    run_cli("report", "--paper-csv", str(root / "raw.csv"), "--metadata", str(root / "meta.csv"), "--out", str(again),
            check=True)
    names = sorted(f.name for f in out.iterdir())
    assert names == sorted(f.name for f in again.iterdir()) and any(n.endswith(".pdf") for n in names)
    changed = [n for n in names if (out / n).read_bytes() != (again / n).read_bytes()]
    assert changed in ([], ["index.html"]), changed


def test_analysis_api_tables(tmp_path):
    """The notebook path: DataFrames from layercrit.analysis, no files, no plotting."""
    csv, meta = write_paper_csv(tmp_path / "raw.csv"), write_metadata(tmp_path / "meta.csv")
    layer_mean, layer_std, avg, _, _, _ = _expected()
    study = load_results(paper_csvs=[csv], metadata=meta)
    matrix = study.matrix()
    assert list(matrix.index) == DISPLAY_ORDER and list(matrix.columns) == LAYERS
    order = [IDS.index(m) for m in DISPLAY_ORDER]
    np.testing.assert_allclose(matrix.to_numpy(), layer_mean[order])
    np.testing.assert_allclose(study.matrix("criticality_std").to_numpy(), layer_std[order])
    np.testing.assert_allclose(study.delta().to_numpy(), layer_mean[order] - layer_mean[0])
    assert list(study.layers["label"]) == LABELS and list(study.layers["stage"]) == STAGE
    stats_ = study.model_stats.set_index("model_id")
    assert stats_.loc["toy_adv_eps3", "display_name"] == "toy_adv_eps3"  # no display name: the id
    assert stats_.loc["toy_base", "display_name"] == "Toy baseline"
    np.testing.assert_allclose(stats_.loc[IDS, "avg_criticality"], avg)
    corr = study.correlation_table().set_index("subset")
    assert corr.loc["all", "n"] == 6 and corr.loc["without_adversarial training", "n"] == 4
    assert study.stage_stats.shape == (6, 6) and list(study.category_stage_stats.index)[0] == "baseline"


def test_layer_order_and_names_match_a_real_resnet50():
    """Shuffled ResNet-50 names sort into the order a traced forward pass runs them in."""
    import torchvision

    traced = [layer.name for layer in lc.discover_layers(torchvision.models.resnet50(), 64)]
    assert len(traced) == 54
    shuffled = list(np.random.default_rng(0).permutation(["model." + n for n in traced]))
    frame = layer_frame([lc.analysis.strip_prefix(n) for n in shuffled])
    assert list(frame["layer"]) == traced
    labels = dict(zip(frame["layer"], frame["label"]))
    assert labels["conv1"] == "[0] stem" and labels["fc"] == "[head] fc"
    assert labels["layer3.4.conv2"] == "[3.4] conv2 3x3" and labels["layer3.4.conv3"] == "[3.4] conv3 1x1"
    assert labels["layer2.0.downsample.0"] == "[2.0] downsample"
    assert frame["stage"].value_counts().to_dict() == {"stem": 1, "stage 1": 10, "stage 2": 13, "stage 3": 19,
                                                       "stage 4": 10, "head": 1}


def test_analysis_imports_no_torch_and_no_plotting():
    for path in (ROOT / "src" / "layercrit" / "analysis").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in ("torch", "torchvision", "timm", "matplotlib", "seaborn"), path


# ---------------------------------------------------------------------------------------------
# Databases produced by layercrit measure
# ---------------------------------------------------------------------------------------------
def _tiny_data():
    g = torch.Generator().manual_seed(7)
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=g)
    return lc.EvalData.from_tensors(images, torch.randint(0, 4, (40,), generator=g), ["a", "b", "c", "d"])


@pytest.fixture(scope="module")
def tiny_db(tmp_path_factory):
    """Two tiny models measured into one database, random and zero resets."""
    db = tmp_path_factory.mktemp("db") / "study.db"
    data = _tiny_data()
    for seed, name, category in ((1, "tiny_a", "baseline"), (2, "tiny_b", "augmentation")):
        torch.manual_seed(seed)
        bundle = lc.ModelBundle.from_module(TinyCNN(), TinyCNN, normalize=None, model_id=name, category=category)
        lc.measure(bundle, data, samples=None, trials=2, reset=["random", "zero"], store=db, progress=False)
    return db


def test_database_report_is_complete(tiny_db, tmp_path):
    out = tmp_path / "report"
    run_cli("report", "--db", str(tiny_db), "--out", str(out), check=True)
    no_epsilon = [f for f in REPORT_FILES if not f.startswith("epsilon.")]  # no model has a training epsilon
    assert sorted(p.name for p in out.iterdir()) == sorted(no_epsilon)
    s = json.loads((out / "summary.json").read_text())
    with lc.ResultStore(tiny_db, create=False) as store:
        tidy, runs = store.results(), store.runs().set_index("model_id")
    rand = tidy[tidy["reset"] == "random"]
    assert s["baseline"] == "tiny_a" and s["layers"] == ["conv1", "conv2", "fc"]  # forward order (layer_index)
    for model in ("tiny_a", "tiny_b"):
        got = s["models"][model]
        assert got["accuracy"] == pytest.approx(runs.at[model, "base_top1_acc"])  # measured top-1
        assert got["category"] == runs.at[model, "category"]
        per_layer = rand[rand["model_id"] == model].groupby("layer")["criticality"].mean()
        assert got["avg_criticality"] == pytest.approx(per_layer.mean())
        assert (got["n_layers"], got["n_trials"]) == (3, 2)
        assert got["stages"]["stem"] == pytest.approx(per_layer["conv1"])
        assert got["stages"]["other"] == pytest.approx(per_layer["conv2"])  # not a ResNet name
    page = (out / "index.html").read_text()
    data = _page_data(page)
    assert len(data["values"]["abs"]) == 2 and all(len(r) == 3 for r in data["values"]["abs"])
    assert [r["model_id"] for r in data["runs"]] == ["tiny_a", "tiny_b"] and data["runs"][0]["config"]["trials"] == 2

    # the other reset kind on request: one deterministic trial
    out_zero = tmp_path / "zero"
    run_cli("report", "--db", str(tiny_db), "--reset", "zero", "--out", str(out_zero), check=True)
    z = json.loads((out_zero / "summary.json").read_text())["models"]["tiny_b"]
    zero = tidy[(tidy["reset"] == "zero") & (tidy["model_id"] == "tiny_b")]
    assert z["n_trials"] == 1 and z["avg_criticality"] == pytest.approx(zero["criticality"].mean())


def test_cli_measured_resnet_joins_the_papers_csv(tmp_path):
    """`layercrit measure` on cifar_resnet50 + the study's CSV layout: layer names match across sources."""
    folder = tmp_path / "images"
    for c in range(10):
        (folder / f"c{c}").mkdir(parents=True)
        Image.new("RGB", (32, 32), (25 * c, 90, 200 - 15 * c)).save(folder / f"c{c}" / "0.png")
    db = tmp_path / "r50.db"
    run_cli("measure", "--model", "arch:cifar_resnet50", "--data", str(folder), "--samples", "8", "--trials", "1",
            "--layers", "conv1", "layer1.0.downsample.0", "fc", "--db", str(db), "--no-progress", check=True)
    csv = write_paper_csv(tmp_path / "raw.csv", ids=["toy_base", "toy_aug_a"])
    meta = write_metadata(tmp_path / "meta.csv")
    out = tmp_path / "report"
    proc = run_cli("report", "--db", str(db), "--paper-csv", str(csv), "--metadata", str(meta),
                   "--baseline", "toy_base", "--out", str(out), check=True)
    s = json.loads((out / "summary.json").read_text())
    assert s["layers"] == LAYERS  # the union, one column per layer name, in network order
    assert s["models"]["cifar_resnet50"]["n_layers"] == 3
    assert s["models"]["cifar_resnet50"]["category"] == "uncategorized"
    assert "no category for cifar_resnet50" in proc.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReportWarning)  # the same warnings the CLI printed above
        delta = load_results([db], [csv], metadata=meta, baseline="toy_base").delta()
    assert np.isnan(delta.loc["cifar_resnet50", "layer2.0.conv1"])  # not measured there: no value, not 0
    assert not np.isnan(delta.loc["cifar_resnet50", "layer1.0.downsample.0"])
    assert delta.loc["cifar_resnet50", "fc"] == pytest.approx(s["models"]["cifar_resnet50"]["stages"]["head"] - 10.0)


# ---------------------------------------------------------------------------------------------
# Metadata: precedence, and what happens without it
# ---------------------------------------------------------------------------------------------
def test_metadata_precedence(tiny_db, tmp_path, monkeypatch):
    """zoo registry < the database's own category and measured top-1 < --metadata."""
    registry = pd.DataFrame({"model_id": ["tiny_a", "tiny_b", "toy_adv_eps1"],
                             "category": ["registry", "registry", "adversarial training"],
                             "accuracy": [1.0, 2.0, 55.5], "epsilon": [np.nan, np.nan, 1.0],
                             "norm": [None, None, "linf"], "display_name": ["Reg A", "Reg B", "Reg adv"]})
    monkeypatch.setattr("layercrit.analysis.metadata.registry_metadata", lambda: registry)
    user = tmp_path / "user.csv"
    user.write_text("model_id,category,display_name\ntiny_b,my category,\n")
    csv = write_paper_csv(tmp_path / "raw.csv", ids=["toy_adv_eps1"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReportWarning)  # every model has its metadata somewhere: no warning
        pass_through = load_results([tiny_db], [csv])  # no user file; toy_adv_eps1 from the registry only
    models = load_results([tiny_db], [csv], metadata=user).models.set_index("model_id")
    with lc.ResultStore(tiny_db, create=False) as store:
        measured = store.runs().set_index("model_id")["base_top1_acc"]
    assert models.at["tiny_a", "category"] == "baseline"  # the database beats the registry
    assert models.at["tiny_a", "accuracy"] == pytest.approx(measured["tiny_a"])
    assert models.at["tiny_a", "display_name"] == "Reg A"  # only the registry has one
    assert models.at["tiny_b", "category"] == "my category"  # the user's file beats the database
    assert models.at["tiny_b", "display_name"] == "Reg B"  # an empty cell does not erase a value
    assert (models.at["toy_adv_eps1", "accuracy"], models.at["toy_adv_eps1", "norm"]) == (55.5, "linf")
    assert pass_through.models.set_index("model_id").at["toy_adv_eps1", "category"] == "adversarial training"


def test_missing_metadata_warns_and_shows_uncategorized(tmp_path, monkeypatch):
    monkeypatch.setattr("layercrit.analysis.metadata.registry_metadata", lambda: pd.DataFrame())
    csv = write_paper_csv(tmp_path / "raw.csv")
    with pytest.warns(ReportWarning) as caught:
        study = load_results(paper_csvs=[csv])
    assert any(str(w.message).startswith("no category for toy_adv_eps1, toy_adv_eps3, toy_aug_a, toy_aug_b, "
                                         "toy_base and 1 more") for w in caught)
    assert set(study.models["category"]) == {"uncategorized"}
    assert "first model" in study.notes[0]  # no category 'baseline': the first model, and said so
    out = tmp_path / "report"
    proc = run_cli("report", "--paper-csv", str(csv), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("layercrit: warning: no category for toy_adv_eps1") and "--metadata" in lines[0]
    assert lines[1].startswith("layercrit: warning: no accuracy for") and "Traceback" not in proc.stderr
    s = json.loads((out / "summary.json").read_text())
    assert {m["category"] for m in s["models"].values()} == {"uncategorized"}
    assert s["models"]["toy_base"]["accuracy"] is None
    assert s["correlations"]["all"]["spearman"]["rho"] is None  # no accuracies: no correlation, not a crash
    # nothing to compare against accuracy or epsilon: those figures are left out, not drawn as placeholders
    assert not (out / "accuracy_vs_criticality.png").exists() and not (out / "epsilon.pdf").exists()
    assert (out / "heatmap.png").stat().st_size > 0 and (out / "delta.png").stat().st_size > 0


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written
# ---------------------------------------------------------------------------------------------
def _assert_clean_error(proc, needle, out):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("layercrit: error:") and needle in lines[0], proc.stderr
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.partial-*"))


def test_bad_input_is_one_clean_line(tmp_path, tiny_db):
    out = tmp_path / "report"
    csv = write_paper_csv(tmp_path / "raw.csv")
    short = tmp_path / "short.csv"
    pd.read_csv(csv).drop(columns=["pred_cos_sim", "trial"]).to_csv(short, index=False)
    cases = [
        (["--db", str(tmp_path / "none.db")], "results database not found"),
        (["--paper-csv", str(tmp_path / "none.csv")], "raw-results CSV not found"),
        (["--paper-csv", str(short)], "lacks the raw-results column(s) trial, pred_cos_sim"),
        (["--paper-csv", str(csv), "--baseline", "nope"], "--baseline nope is not among the reported models"),
        (["--db", str(tiny_db), "--reset", "interpolate:0.5"], "holds no 'interpolate:0.5' resets"),
        (["--paper-csv", str(csv), "--metadata", str(tmp_path / "none.csv")], "metadata file not found"),
        ([], "no results given"),
    ]
    for args, needle in cases:
        _assert_clean_error(run_cli("report", *args, "--out", str(out)), needle, out)


def test_python_callers_read_parameter_names(tmp_path):
    """The same problems from Python name the parameters called (issue 22); the CLI (above) shows its flags."""
    from layercrit.analysis import read_claims, read_lab_csv, read_metadata_csv, read_paper_csv
    from layercrit.cli import with_flags
    from layercrit.cli.report import REPORT_FLAGS
    from layercrit.errors import ConfigError

    csv, none = write_paper_csv(tmp_path / "raw.csv"), tmp_path / "none.csv"
    cases = [(lambda: load_results(), "pass at least one dbs STUDY.db or paper_csvs FILE",
              "pass at least one --db STUDY.db or --paper-csv FILE"),
             (lambda: load_results(paper_csvs=[none]), "check paper_csvs", "check --paper-csv"),
             (lambda: read_paper_csv(none), "check path", "check --paper-csv"),
             (lambda: load_results(paper_csvs=[csv], metadata=none), "check metadata", "check --metadata"),
             (lambda: read_metadata_csv(none), "check path", "check --metadata"),
             (lambda: load_results(paper_csvs=[csv], baseline="nope"), "baseline nope is not among",
              "--baseline nope is not among"),
             (lambda: load_results(paper_csvs=[csv], only=["toy*", "!toy*"]), "only toy* !toy* leaves no model",
              "--only toy* !toy* leaves no model"),
             (lambda: read_lab_csv(none), "or check path", "or check --lab"),
             (lambda: read_claims(tmp_path / "none.toml"), "check path", "check --claims")]
    for call, python, cli in cases:
        with pytest.raises(ConfigError) as e, warnings.catch_warnings():
            warnings.simplefilter("ignore", ReportWarning)
            call()
        assert python in str(e.value) and "--" not in str(e.value), str(e.value)
        assert cli in with_flags(e.value, REPORT_FLAGS)
    with pytest.warns(ReportWarning, match="give one with metadata FILE.csv"):
        study = load_results(paper_csvs=[csv])
    assert study.notes[0].endswith("choose one with baseline")
    assert study.notes[0].naming({"baseline": "--baseline"}).endswith("choose one with --baseline")


def test_failure_while_rendering_leaves_no_half_written_report(tmp_path, monkeypatch):
    csv = write_paper_csv(tmp_path / "raw.csv", ids=["toy_base", "toy_aug_a"])
    out = tmp_path / "report"
    out.mkdir()
    (out / "summary.json").write_text("old")

    def boom(*_a, **_k):
        raise RuntimeError("disk full")

    monkeypatch.setattr("layercrit.report.stages_markdown", boom)  # after the figures, before the page
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReportWarning)
        with pytest.raises(RuntimeError, match="disk full"):
            run_cli("report", "--paper-csv", str(csv), "--out", str(out))
    assert [p.name for p in out.iterdir()] == ["summary.json"] and (out / "summary.json").read_text() == "old"
    assert not list(tmp_path.glob(".report.partial-*"))


# ---------------------------------------------------------------------------------------------
# The interactive page in a real browser
# ---------------------------------------------------------------------------------------------
def _page_data(page: str) -> dict:
    block = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    return json.loads(block.group(1))


def test_page_is_self_contained(paper_report):
    page = (paper_report[0] / "index.html").read_text()
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)\s*=", page, re.I)  # nothing fetched
    assert "@import" not in page and "url(" not in page
    data = _page_data(page)
    assert [m["id"] for m in data["models"]] == DISPLAY_ORDER
    assert [layer["label"] for layer in data["layers"]] == LABELS


def _chromium():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("headless browser test needs Debian's chromium and chromium-driver "
                    "(apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1500,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))  # no driver download


def test_page_in_headless_chromium(paper_report, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    out, _ = paper_report
    layer_mean, layer_std, *_ = _expected()
    browser = _chromium()
    try:
        browser.get((out / "index.html").as_uri())
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors

        cells = browser.find_elements(By.CSS_SELECTOR, "#heatmap rect.cell")
        pairs = {(c.get_attribute("data-model"), c.get_attribute("data-layer")) for c in cells}
        assert len(cells) == len(IDS) * len(LAYERS) and pairs == {(m, n) for m in IDS for n in LAYERS}

        i, j = IDS.index("toy_adv_eps3"), LAYERS.index("layer1.0.conv2")
        cell = browser.find_element(By.CSS_SELECTOR,
                                    'rect.cell[data-model="toy_adv_eps3"][data-layer="layer1.0.conv2"]')
        ActionChains(browser).move_to_element(cell).perform()
        tip = browser.find_element(By.ID, "tooltip")
        assert tip.is_displayed()
        text = tip.text
        assert "toy_adv_eps3" in text and "[1.0] conv2 3x3" in text and "adversarial training" in text
        assert f"{layer_mean[i, j]:.1f} ± {layer_std[i, j]:.1f} %" in text
        assert f"{TOP1[i, j].mean():.2f} %" in text  # top-1 after the reset
        assert f"{100 * (TOP1[i, j] / MODELS['toy_adv_eps3'][1]).mean():.1f} %" in text  # recovered accuracy
        assert f"{layer_mean[i, j] - layer_mean[0, j]:+.1f} pp" in text
        shot = tmp_path / "report-screenshot.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        if os.environ.get("LAYERCRIT_UPDATE_DOCS"):  # refresh the README's picture on request, not in every run
            shutil.copy(shot, ROOT / "docs" / "report-screenshot.png")

        def fills():
            return {(c.get_attribute("data-model"), c.get_attribute("data-layer")): c.get_attribute("fill")
                    for c in cells}

        absolute = fills()
        assert len(set(absolute[("toy_base", n)] for n in LAYERS)) == 1  # the baseline is 10 % everywhere
        browser.find_element(By.ID, "view-delta").click()
        delta = fills()
        changed = [k for k in absolute if absolute[k] != delta[k]]
        assert len(changed) >= 0.9 * len(absolute)
        baseline_colours = {delta[("toy_base", n)] for n in LAYERS}
        assert len(baseline_colours) == 1 and baseline_colours != {absolute[("toy_base", "conv1")]}
        assert "toy_base" in browser.find_element(By.ID, "legend-label").text

        Select(browser.find_element(By.ID, "sort")).select_by_value("accuracy")
        rows = browser.find_elements(By.CSS_SELECTOR, "#heatmap g.row")
        y = {r.get_attribute("data-model"): float(re.search(r"translate\(0,\s*([\d.]+)", r.get_attribute("transform"))
                                                  .group(1)) for r in rows}
        assert sorted(y, key=y.get) == sorted(IDS, key=lambda m: -MODELS[m][1])
    finally:
        browser.quit()
