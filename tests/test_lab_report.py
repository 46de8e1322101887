"""The training-lab tables and `report --lab`: variants and seeds, seed spread, accuracy matching, confidence
correlations and trajectory figures, from hand-built results whose every number is known."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import run_cli
from layercrit.analysis import (accuracy_matched, lab_table, load_results, mechanism_table, seed_spread,
                                trajectories, versus_reference)
from layercrit.report.lab import lab_outputs
from layercrit.store import PAPER_COLUMNS

LAYERS = ["conv1", "layer1.0.conv1", "layer2.0.conv1", "layer3.0.conv1", "layer4.0.conv1", "fc"]
STAGES = ["stem", "stage 1", "stage 2", "stage 3", "stage 4", "head"]
STEM_EXTRA = 12.0  # every model's stem is this much more critical than its other layers
# model id -> (method, variant, seed, epoch, final epoch, clean top-1, confidence, base criticality A)
LAB = {
    "std-s0-e01": ("standard", "standard", 0, 1, 40, 40.0, 0.40, 10.0),
    "std-s0-e10": ("standard", "standard", 0, 10, 40, 68.0, 0.70, 20.0),
    "std-s0": ("standard", "standard", 0, 40, 40, 87.0, 0.90, 30.0),
    "std-s1": ("standard", "standard", 1, 40, 40, 86.0, 0.89, 34.0),
    "std-fp32": ("standard", "standard precision=fp32", 0, 40, 40, 87.2, 0.91, 31.0),
    "std-short": ("standard", "standard epochs=6", 0, 6, 6, 69.0, 0.75, 18.0),  # a budget control
    "adv-s0-e01": ("pgd-linf", "pgd-linf eps=8/255", 0, 1, 40, 35.0, 0.30, 4.0),
    "adv-s0": ("pgd-linf", "pgd-linf eps=8/255", 0, 40, 40, 70.0, 0.55, 15.0),
}
NOT_IN_LAB = "third-party"  # measured, but no lab row: left out of the lab tables


def _criticality(model: str, layer: str) -> float:
    base = 25.0 if model == NOT_IN_LAB else LAB[model][7]
    return base + (STEM_EXTRA if layer == "conv1" else 0.0)


def write_results(path):
    rows = []
    for model in [*LAB, NOT_IN_LAB]:
        for layer in LAYERS:
            for trial in range(2):
                cos = 1.0 - _criticality(model, layer) / 100.0
                rows.append({"top1_acc": 50.0, "top5_acc": 90.0, "loss": 1.0, "batch_acc": np.nan,
                             "layer": "model." + layer, "pred_cos_sim": cos, "pred_l1_err": 0.1, "pred_l2_err": 0.1,
                             "pred_ce_loss": 1.0, "trial": float(trial), "recovered_acc": 0.5, "model_id": model})
    pd.DataFrame(rows, columns=PAPER_COLUMNS).to_csv(path, index=False)
    return path


def lab_frame(with_variant: bool = True) -> pd.DataFrame:
    rows = [{"model_id": m, "method": v[0], "variant": v[1], "seed": v[2], "epoch": v[3], "final_epoch": v[4],
             "clean_test_acc": v[5], "mean_confidence": v[6], "mean_entropy": 2.0 - 2.0 * v[6]}
            for m, v in LAB.items()]
    rows.append({"model_id": "trained-not-measured", "method": "standard", "variant": "standard", "seed": 2,
                 "epoch": 40, "final_epoch": 40, "clean_test_acc": 85.0})
    frame = pd.DataFrame(rows)
    return frame if with_variant else frame.drop(columns=["variant"])


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    csv = write_results(tmp_path_factory.mktemp("lab") / "raw.csv")
    return lab_table(load_results(paper_csvs=[csv]), lab_frame())


def _avg(base: float) -> float:
    return base + STEM_EXTRA / len(LAYERS)


def test_lab_table_joins_measured_and_listed_models(table):
    assert set(table["model_id"]) == set(LAB)  # not the unlisted third-party model, not the unmeasured run
    row = table.set_index("model_id").loc["adv-s0"]
    assert row["variant"] == "pgd-linf eps=8/255" and bool(row["final"])
    assert not table.set_index("model_id").loc["std-s0-e10", "final"]
    assert row["avg"] == pytest.approx(_avg(15.0))
    assert row["stem"] == pytest.approx(15.0 + STEM_EXTRA)
    for stage in STAGES[1:]:
        assert row[stage] == pytest.approx(15.0)


def test_seed_spread_is_over_the_seeds_of_one_variant(table):
    spread = seed_spread(table).set_index(["variant", "quantity"])
    std = spread.loc[("standard", "avg")]
    assert std["n"] == 2 and std["seeds"] == "0,1"  # the fp32 run is another variant, not a third seed
    assert std["mean"] == pytest.approx(_avg(32.0))
    assert std["std"] == pytest.approx(np.std([30.0, 34.0], ddof=1))
    assert (std["min"], std["max"]) == pytest.approx((_avg(30.0), _avg(34.0)))
    assert spread.loc[("standard", "clean_test_acc"), "mean"] == pytest.approx(86.5)
    one = spread.loc[("standard precision=fp32", "avg")]
    assert one["n"] == 1 and np.isnan(one["std"])
    assert ("pgd-linf eps=8/255", "stage 3") in spread.index  # checkpoints are not seeds
    assert spread.loc[("pgd-linf eps=8/255", "stage 3"), "n"] == 1


def test_accuracy_matched_takes_the_nearest_reference_model_like_with_like(table):
    matched = accuracy_matched(table, "standard").set_index("model_id")
    # the budget control is the reference with another budget: a match, not a model to match
    assert set(matched.index) == {"std-fp32", "adv-s0-e01", "adv-s0"}
    adv = matched.loc["adv-s0"]  # 70 %, final: the finished 6-epoch standard run (69 %), not the 68 % checkpoint
    assert adv["matched_id"] == "std-short" and adv["acc_gap"] == pytest.approx(1.0) and adv["like"]
    assert adv["delta_avg"] == pytest.approx(15.0 - 18.0)
    assert adv["delta stage 4"] == pytest.approx(15.0 - 18.0)
    assert matched.loc["adv-s0-e01", "matched_id"] == "std-s0-e01"  # a checkpoint: 35 % -> 40 %, gap -5
    assert matched.loc["adv-s0-e01", "acc_gap"] == pytest.approx(-5.0)
    assert matched.loc["std-fp32", "matched_id"] == "std-s0"  # 87.2: 87.0 beats 86.0
    without_control = accuracy_matched(table[table["model_id"] != "std-short"], "standard").set_index("model_id")
    assert without_control.loc["adv-s0", "matched_id"] == "std-s1"  # finals only: 86 % beats the 68 % checkpoint


def test_mechanism_correlations_match_scipy(table):
    mech = mechanism_table(table).set_index(["subset", "against"])
    finals = table[table["final"]]
    rho, p = stats.spearmanr(finals["mean_confidence"], finals["avg"])
    got = mech.loc[("final models", "mean confidence")]
    assert got["n"] == 5 and got["spearman_rho"] == pytest.approx(rho) and got["spearman_p"] == pytest.approx(p)
    tau, _ = stats.kendalltau(table["clean_test_acc"], table["avg"])
    assert mech.loc[("all models (with checkpoints)", "clean top-1"), "kendall_tau"] == pytest.approx(tau)
    assert mech.loc[("all models (with checkpoints)", "mean entropy"), "spearman_rho"] < 0


def test_versus_reference_differences_and_their_standard_errors(table):
    versus = versus_reference(table, "standard").set_index(["variant", "quantity"])
    assert set(versus.index.get_level_values("variant")) == {"pgd-linf eps=8/255", "standard precision=fp32",
                                                             "standard epochs=6"}
    adv = versus.loc[("pgd-linf eps=8/255", "avg")]  # final models only: adv-s0 against std-s0 and std-s1
    assert (adv["n"], adv["reference_n"]) == (1, 2)
    assert adv["delta"] == pytest.approx(_avg(15.0) - _avg(32.0))
    s_ref = np.std([30.0, 34.0], ddof=1)  # one adversarial seed: the reference's spread stands in for its own
    assert adv["se"] == pytest.approx(np.sqrt(s_ref ** 2 / 1 + s_ref ** 2 / 2)) and adv["se_from"] == "reference"
    assert np.isnan(adv["std"]) and adv["reference_std"] == pytest.approx(s_ref)
    assert versus.loc[("pgd-linf eps=8/255", "stage 4"), "delta"] == pytest.approx(15.0 - 32.0)
    assert versus.loc[("pgd-linf eps=8/255", "clean_test_acc"), "delta"] == pytest.approx(70.0 - 86.5)


def test_other_architectures_are_listed_but_not_compared(tmp_path):
    """A model of another architecture (its own layers) is in the model table and seed spread, but is matched
    against nothing, differenced against nothing and pooled into no correlation."""
    csv = write_results(tmp_path / "raw.csv")
    raw = pd.read_csv(csv)
    other = raw[raw["model_id"] == NOT_IN_LAB].assign(model_id="resnet20",
                                                      layer=lambda f: f["layer"].str.replace("layer", "block"))
    pd.concat([raw, other]).to_csv(csv, index=False)
    lab = pd.concat([lab_frame(), pd.DataFrame([{"model_id": "resnet20", "clean_test_acc": 69.0},
                                                 {"model_id": NOT_IN_LAB, "clean_test_acc": 75.0}])])
    results = load_results(paper_csvs=[csv])
    table = lab_table(results, lab)
    assert table.set_index("model_id")["arch"].nunique() == 2
    assert "resnet20" in set(seed_spread(table)["variant"])
    assert "resnet20" not in set(accuracy_matched(table, "standard")["model_id"])  # 69 % would match std-s0-e10
    assert "resnet20" not in set(versus_reference(table, "standard")["variant"])
    mech = mechanism_table(table)
    assert mech["arch"].nunique() == 1  # the given model of the lab's architecture counts, resnet20 does not
    assert mech.set_index(["subset", "against"]).loc[("final models", "clean top-1"), "n"] == 6
    _, figures, page = lab_outputs(results, lab)
    legend = {t.get_text() for t in figures["trajectory_epoch"].legends[0].get_texts()}
    assert NOT_IN_LAB in legend and "resnet20" not in legend  # a given model of the lab's architecture is drawn
    assert "Not compared with `standard` (another architecture): resnet20." in page


def test_trajectories_are_runs_with_two_or_more_epochs(table):
    paths = trajectories(table)
    assert list(paths["model_id"]) == ["adv-s0-e01", "adv-s0", "std-s0-e01", "std-s0-e10", "std-s0"]


def test_without_a_variant_column_the_method_is_the_variant(tmp_path):
    csv = write_results(tmp_path / "raw.csv")
    table = lab_table(load_results(paper_csvs=[csv]), lab_frame(with_variant=False))
    assert set(table["variant"]) == {"standard", "pgd-linf"}


def test_a_given_model_is_a_final_variant_of_its_own(tmp_path):
    """A model the study was given (no method, seed or epoch in `study accuracies`) is its own variant and final."""
    csv = write_results(tmp_path / "raw.csv")
    given = pd.DataFrame([{"model_id": NOT_IN_LAB, "clean_test_acc": 81.0, "mean_confidence": 0.94}])
    table = lab_table(load_results(paper_csvs=[csv]), pd.concat([lab_frame(), given], ignore_index=True))
    row = table.set_index("model_id").loc[NOT_IN_LAB]
    assert row["variant"] == NOT_IN_LAB and bool(row["final"]) and row["avg"] == pytest.approx(_avg(25.0))
    spread = seed_spread(table).set_index(["variant", "quantity"])
    assert spread.loc[(NOT_IN_LAB, "avg"), "n"] == 1
    assert NOT_IN_LAB not in set(trajectories(table)["model_id"])


def test_report_lab_writes_tables_figures_and_page(tmp_path):
    csv = write_results(tmp_path / "raw.csv")
    lab = tmp_path / "accuracies.csv"
    lab_frame().to_csv(lab, index=False)
    out = tmp_path / "report"
    proc = run_cli("report", "--paper-csv", str(csv), "--lab", str(lab), "--out", str(out), check=True)
    assert "lab.md" in proc.stdout
    for name in ["lab.md", "lab_models.csv", "lab_seeds.csv", "lab_matched.csv", "lab_versus.csv", "lab_mechanism.csv",
                 "trajectory_epoch.png", "trajectory_epoch.pdf", "trajectory_accuracy.png", "trajectory_accuracy.pdf"]:
        assert (out / name).stat().st_size > 0, name
    models = pd.read_csv(out / "lab_models.csv").set_index("model_id")
    assert models.loc["std-s1", "avg"] == pytest.approx(_avg(34.0))
    page = (out / "lab.md").read_text()
    assert f"| standard | 0,1 | 86.5 ± 0.7 | 0.895 ± 0.007 | 0.210 ± 0.014 | {_avg(32.0):.1f} ± 2.8 |" in page
    assert "| adv-s0 | 70.00 | std-short | 69.00 | 1.00 |" in page
    se = {q: np.sqrt(1.5) * np.std(v, ddof=1) for q, v in [("acc", [87.0, 86.0]), ("conf", [0.90, 0.89]),
                                                              ("avg", [30.0, 34.0])]}
    assert (f"| pgd-linf eps=8/255 | 1 vs 2 | -16.5 ± {se['acc']:.1f} | -0.345 ± {se['conf']:.3f} | "
            f"{_avg(15.0) - _avg(32.0):+.1f} ± {se['avg']:.1f} |") in page


def test_report_lab_bad_input_is_one_line_and_writes_nothing(tmp_path):
    csv = write_results(tmp_path / "raw.csv")
    good, no_epoch, dupes, bad_acc = (tmp_path / f"{n}.csv" for n in ("good", "no_epoch", "dupes", "bad_acc"))
    lab_frame().to_csv(good, index=False)
    lab_frame().drop(columns=["epoch"]).to_csv(no_epoch, index=False)
    pd.concat([lab_frame(), lab_frame().head(1)]).to_csv(dupes, index=False)
    lab_frame().astype({"clean_test_acc": object}).assign(clean_test_acc="high").to_csv(bad_acc, index=False)
    other = tmp_path / "other.csv"
    lab_frame().assign(model_id=lambda f: "x-" + f["model_id"]).to_csv(other, index=False)
    out = tmp_path / "report"
    cases = [
        (["--lab", str(tmp_path / "none.csv")], "lab table not found"),
        (["--lab", str(no_epoch)], "has no column epoch"),
        (["--lab", str(dupes)], "more than once"),
        (["--lab", str(bad_acc)], "clean_test_acc 'high' is not a number"),
        (["--lab", str(other)], "no model is both in the results and in the lab table"),
        (["--lab", str(good), "--lab-reference", "sgd"], "--lab-reference sgd is not a variant"),
        (["--lab-reference", "standard"], "--lab-reference applies to a lab table"),
    ]
    for args, needle in cases:
        proc = run_cli("report", "--paper-csv", str(csv), *args, "--out", str(out))
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("layercrit: error:") and needle in lines[0], proc.stderr
        assert not out.exists() and not list(tmp_path.glob(".report.partial-*"))


def test_report_only_selects_models_by_glob(tmp_path):
    csv = write_results(tmp_path / "raw.csv")
    finals = load_results(paper_csvs=[csv], only=["!*-e??"])  # the checkpoints left out
    assert sorted(finals.model_ids) == sorted(["std-s0", "std-s1", "std-fp32", "std-short", "adv-s0", NOT_IN_LAB])
    assert sorted(load_results(paper_csvs=[csv], only=["std-*", "!*fp32"]).model_ids) == \
        sorted(["std-s0", "std-s0-e01", "std-s0-e10", "std-s1", "std-short"])
    out = tmp_path / "report"
    proc = run_cli("report", "--paper-csv", str(csv), "--only", "adv-*", "std-s0", "--out", str(out), check=True)
    assert "on 3 models" in proc.stdout
    for args, needle in [(["--only", "nope*"], "model pattern 'nope*' matches no model"),
                         (["--only", "std-*", "!std-*"], "leaves no model to report")]:
        proc = run_cli("report", "--paper-csv", str(csv), *args, "--out", str(tmp_path / "r2"))
        assert proc.returncode == 2 and needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, \
            proc.stderr
        assert not (tmp_path / "r2").exists()
