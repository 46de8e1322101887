"""Claims judged by fixed rules (`report --lab ... --claims`): every judgement and verdict from hand-built lab
tables whose numbers are known, the file's checks, and the report on the committed converged-lab database."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from layercrit.analysis import claims_from_dict, judge_claims, read_claims
from layercrit.errors import LayercritError

STAGES = ["stem", "stage 1", "stage 2", "stage 3", "stage 4", "head"]
ROOT = Path(__file__).resolve().parents[1]
CONVERGED = ROOT / "docs" / "results" / "cifar10-converged"


def model(model_id, variant, seed, acc, deep, shallow=20.0, final=True):
    """A lab-table row: stages 3-4 at ``deep``, the others at ``shallow``; avg their mean."""
    values = {s: (deep if s in ("stage 3", "stage 4") else shallow) for s in STAGES}
    return {"model_id": model_id, "method": variant.split()[0], "variant": variant, "seed": seed,
            "epoch": 40 if final else 10, "final_epoch": 40, "final": final, "arch": "resnet",
            "clean_test_acc": acc, "avg": float(np.mean(list(values.values()))), **values}


def lab(*rows) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


REFERENCE = [model("std-s0", "standard", 0, 87.0, 12.0), model("std-s1", "standard", 1, 86.0, 14.0),
             model("std-short", "standard epochs=6", 0, 70.0, 10.0)]


def claims(**claim) -> object:
    rules = claim.pop("rules", {})
    return claims_from_dict({"rules": {"floor": 3.9, **rules},
                             "claims": [{"id": "c", "text": "t", "variants": ["adv"], "quantity": ["stage 3", "stage 4"],
                                         **claim}]})


def judged(tables, c):
    cells, verdicts = judge_claims(tables, c)
    return cells.set_index(["measure", "comparison"]), verdicts


def test_a_claim_that_counts_everywhere_holds_with_the_versus_numbers():
    table = lab(*REFERENCE, model("adv-s0", "adv", 0, 69.0, 22.0), model("adv-s1", "adv", 1, 70.0, 26.0))
    cells, verdicts = judged({"criticality": table, "disagreement": table}, claims())
    final = cells.loc[("criticality", "final")]
    assert final["delta"] == pytest.approx(24.0 - 13.0)
    se = np.sqrt(np.var([22, 26], ddof=1) / 2 + np.var([12, 14], ddof=1) / 2)
    assert final["se"] == pytest.approx(se) and final["bar"] == pytest.approx(max(2 * se, 3.9))
    matched = cells.loc[("criticality", "matched")]  # both seeds against the 6-epoch run (70 %), the one match
    assert matched["delta"] == pytest.approx(24.0 - 10.0)
    assert matched["se"] == pytest.approx(np.sqrt(np.var([22, 26], ddof=1) / 2 + np.var([12, 14], ddof=1) / 1))
    assert matched["max_acc_gap"] == pytest.approx(1.0)
    assert set(cells["judgement"]) == {"counts"}
    assert verdicts.set_index("variant").loc["adv", "verdict"] == "holds"


def test_against_the_claim_or_no_difference_everywhere_does_not_hold():
    lower = lab(*REFERENCE, model("adv-s0", "adv", 0, 69.0, 2.0), model("adv-s1", "adv", 1, 70.0, 3.0))
    cells, verdicts = judged({"criticality": lower, "disagreement": lower}, claims())
    assert set(cells["judgement"]) == {"counts against"}
    assert verdicts["verdict"].iloc[0] == "does not hold"
    # within the floor (3.9) although above 2 se: no difference, since 2 se < null_effect
    same = lab(*REFERENCE, model("adv-s0", "adv", 0, 69.0, 12.5), model("adv-s1", "adv", 1, 70.0, 13.5))
    cells, verdicts = judged({"criticality": same, "disagreement": lower}, claims())
    assert cells.loc[("criticality", "final"), "judgement"] == "no difference"
    assert verdicts["verdict"].iloc[0] == "does not hold"


def test_noise_too_large_to_tell_and_measures_that_disagree_are_inconclusive():
    noisy = lab(model("std-s0", "standard", 0, 87.0, 2.0), model("std-s1", "standard", 1, 86.0, 30.0),
                REFERENCE[2], model("adv-s0", "adv", 0, 69.0, 18.0))
    cells, verdicts = judged({"criticality": noisy}, claims(rules={"measures": ["criticality"]}))
    final = cells.loc[("criticality", "final")]  # one seed: it borrows the reference's std (19.8)
    assert final["se"] == pytest.approx(np.std([2, 30], ddof=1) * np.sqrt(1 + 1 / 2))
    assert final["judgement"] == "unclear"
    assert verdicts["verdict"].iloc[0] == "inconclusive" and "unclear: criticality final" in verdicts["why"].iloc[0]
    up = lab(*REFERENCE, model("adv-s0", "adv", 0, 69.0, 22.0), model("adv-s1", "adv", 1, 70.0, 26.0))
    down = lab(*REFERENCE, model("adv-s0", "adv", 0, 69.0, 2.0), model("adv-s1", "adv", 1, 70.0, 3.0))
    _, verdicts = judged({"criticality": up, "disagreement": down}, claims())
    assert verdicts["verdict"].iloc[0] == "inconclusive"
    assert verdicts["why"].iloc[0] == ("counts: criticality final, criticality matched; "
                                       "counts against: disagreement final, disagreement matched")


def test_a_match_too_far_in_accuracy_is_not_trusted():
    table = lab(*REFERENCE, model("adv-s0", "adv", 0, 60.0, 22.0), model("adv-s1", "adv", 1, 61.0, 26.0))
    cells, verdicts = judged({"criticality": table}, claims(rules={"measures": ["criticality"]}))
    assert cells.loc[("criticality", "matched"), "judgement"] == "not matched"
    assert cells.loc[("criticality", "matched"), "max_acc_gap"] == pytest.approx(10.0)
    assert verdicts["verdict"].iloc[0] == "inconclusive"
    relaxed = claims(rules={"measures": ["criticality"], "max_gap": 10.0})
    assert judged({"criticality": table}, relaxed)[1]["verdict"].iloc[0] == "holds"


def test_missing_models_or_measures_leave_the_claim_pending():
    table = lab(*REFERENCE, model("adv-s0", "adv", 0, 69.0, 22.0), model("adv-s1", "adv", 1, 70.0, 26.0))
    cells, verdicts = judged({"criticality": table}, claims(variants=["adv", "not-yet"]))
    assert (cells.loc[("disagreement", "final"), "judgement"] == "missing").all()
    by_variant = verdicts.set_index("variant")["verdict"]
    assert by_variant["adv"] == "pending" and by_variant["not-yet"] == "pending" and by_variant["(all)"] == "pending"


def test_contrasts_lower_claims_and_claims_against_another_variant():
    # deep minus shallow: standard 13 - 20 = -7 on average, adv 24 - 20 = +4: a contrast of +11
    table = lab(*REFERENCE, model("adv-s0", "adv", 0, 69.0, 22.0), model("adv-s1", "adv", 1, 70.0, 26.0),
                model("weak-s0", "weak", 0, 80.0, 15.0))
    one = {"rules": {"measures": ["criticality"], "max_gap": 10.0}}  # weak (80 %) is 6 points from standard
    cells, _ = judged({"criticality": table},
                      claims(**one, quantity=["stage 3", "stage 4"], minus=["stem", "stage 1", "stage 2"]))
    assert cells.loc[("criticality", "final"), "delta"] == pytest.approx(11.0)
    cells, verdicts = judged({"criticality": table}, claims(**one, variants=["weak"], direction="lower"))
    assert cells.loc[("criticality", "final"), "delta"] == pytest.approx(15.0 - 13.0)
    assert verdicts["verdict"].iloc[0] == "does not hold"  # +2 where "lower" was claimed: within the floor
    cells, _ = judged({"criticality": table}, claims(**one, against="weak"))
    final, matched = cells.loc[("criticality", "final")], cells.loc[("criticality", "matched")]
    assert final["delta"] == pytest.approx(24.0 - 15.0) and final["against_n"] == 1
    # each side minus its own match: adv - 6-epoch run (10) and weak - standard seed 1 (86 %: 14)
    assert matched["delta"] == pytest.approx((24.0 - 10.0) - (15.0 - 14.0))


@pytest.mark.parametrize("raw, needle", [
    ({"claims": [{"id": "a", "text": "t", "variants": ["x"]}]}, "claim a has no quantity"),
    ({"claims": [{"id": "a", "text": "t", "variants": ["x"], "quantity": "avg", "direction": "up"}]},
     "claim a direction 'up': use higher or lower"),
    ({"claims": [{"id": "a", "text": "t", "variants": ["x"], "quantity": "avg", "colour": 1}]}, "unknown key(s) colour"),
    ({"claims": [{"id": "a", "text": "t", "variants": [], "quantity": "avg"}]}, "claim a variants []"),
    ({"rules": {"z": -1}, "claims": [{"id": "a", "text": "t", "variants": "x", "quantity": "avg"}]}, "[rules] z -1"),
    ({"rules": {"measures": ["cosine"]}, "claims": [{"id": "a", "text": "t", "variants": "x", "quantity": "avg"}]},
     "[rules] measures 'cosine'"),
    ({"claims": [{"id": "a", "text": "t", "variants": "x", "quantity": "avg"}] * 2}, "claim id a appears twice"),
    ({"rules": {}}, "needs at least one [[claims]]"),
])
def test_bad_claims_are_one_error_naming_the_key(raw, needle):
    with pytest.raises(LayercritError) as e:
        claims_from_dict(raw, "claims.toml")
    assert needle in str(e.value) and str(e.value).startswith("claims.toml")


def test_an_unknown_quantity_names_the_columns():
    table = lab(*REFERENCE, model("adv-s0", "adv", 0, 69.0, 22.0))
    with pytest.raises(LayercritError, match="quantity 'stage 5' is not a column of the lab table: use avg, stem"):
        judge_claims({"criticality": table}, claims(quantity=["stage 5"]))


def test_the_converged_lab_claims_file_parses():
    parsed = read_claims(CONVERGED / "claims.toml")
    assert [c.id for c in parsed.claims] == ["1a", "1b", "1c", "2"] and parsed.rules.floor == 3.9


def test_report_claims_on_the_committed_database_agree_with_lab_versus_under_either_metric(tmp_path):
    db, accuracies = CONVERGED / "cifar10-converged.db", CONVERGED / "accuracies.csv"
    only = ["standard-s0", "standard-s1", "standard-short-s0", "pgd-linf-8-s0", "pgd-linf-8-s1"]
    outs = {}
    for metric in ("criticality", "disagreement"):
        outs[metric] = tmp_path / metric
        proc = run_cli("report", "--db", str(db), "--lab", str(accuracies), "--claims", str(CONVERGED / "claims.toml"),
                       "--baseline", "standard-s0", "--metric", metric, "--only", *only, "--out", str(outs[metric]),
                       check=True)
        assert "names variant(s) not in the lab table" in proc.stderr  # pgd-linf-2, pgd-l2, improved, simclr
    claims_c = pd.read_csv(outs["criticality"] / "lab_claims.csv")
    pd.testing.assert_frame_equal(claims_c, pd.read_csv(outs["disagreement"] / "lab_claims.csv"))
    for metric, out in outs.items():  # 1a's final cell is lab_versus's average row, under each measure
        versus = pd.read_csv(out / "lab_versus.csv").set_index(["variant", "quantity"])
        expected = versus.loc[("pgd-linf eps=8/255 steps=2", "avg")]
        cell = claims_c[(claims_c["claim"] == "1a") & (claims_c["variant"] == "pgd-linf eps=8/255 steps=2")
                        & (claims_c["measure"] == metric) & (claims_c["comparison"] == "final")].iloc[0]
        assert cell["delta"] == pytest.approx(expected["delta"]) and cell["se"] == pytest.approx(expected["se"])
    page = (outs["criticality"] / "lab.md").read_text()
    assert "## Claims" in page and "Judged only with these final seeds: `standard` 2, `improved` 2" in page
    assert "claims: 1a pending; 1b pending; 1c pending; 2 pending (lab_verdicts.csv, lab.md)" in proc.stdout
    verdicts = pd.read_csv(outs["criticality"] / "lab_verdicts.csv")
    assert set(verdicts["verdict"]) <= {"holds", "does not hold", "inconclusive", "pending"}
    assert verdicts.set_index(["claim", "variant"]).loc[("1c", "pgd-linf eps=8/255 steps=2"), "verdict"] == "pending"


def test_report_claims_bad_input_is_one_line_and_writes_nothing(tmp_path):
    from test_lab_report import lab_frame, write_results
    csv = write_results(tmp_path / "raw.csv")
    accuracies = tmp_path / "accuracies.csv"
    lab_frame().to_csv(accuracies, index=False)
    good = tmp_path / "claims.toml"
    good.write_text('[[claims]]\nid = "a"\ntext = "t"\nvariants = ["x"]\nquantity = ["avg"]\n')
    bad = tmp_path / "bad.toml"
    bad.write_text('[[claims]]\nid = "a"\n')
    out = tmp_path / "report"
    cases = [(["--claims", str(good)], "--claims applies to a lab table"),
             (["--lab", str(accuracies), "--claims", str(tmp_path / "none.toml")], "claims file not found"),
             (["--lab", str(accuracies), "--claims", str(bad)], "claim a has no text"),
             (["--lab", str(accuracies), "--claims", str(good)], "which a raw-results CSV does not record")]
    for args, needle in cases:
        proc = run_cli("report", "--paper-csv", str(csv), *args, "--out", str(out))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
        assert not out.exists()
    only_cosine = tmp_path / "cosine.toml"
    only_cosine.write_text('[rules]\nmeasures = ["criticality"]\nreference = "standard"\n' + good.read_text()
                           .replace('["x"]', '["pgd-linf eps=8/255"]'))
    run_cli("report", "--paper-csv", str(csv), "--lab", str(accuracies), "--claims", str(only_cosine),
            "--out", str(out), check=True)
    verdicts = pd.read_csv(out / "lab_verdicts.csv")
    assert list(verdicts["variant"]) == ["pgd-linf eps=8/255"] and verdicts["verdict"].iloc[0] != "pending"


def test_the_reference_as_the_claimed_variant_is_judged_from_its_side():
    # "standard below adv": the mirror of "adv above standard", the same cells with the sign turned
    table = lab(*REFERENCE, model("adv-s0", "adv", 0, 69.0, 22.0), model("adv-s1", "adv", 1, 70.0, 26.0))
    up = judged({"criticality": table}, claims(rules={"measures": ["criticality"]}))[0]
    down = judged({"criticality": table}, claims(rules={"measures": ["criticality"]}, variants=["standard"],
                                                 against="adv", direction="lower"))[0]
    assert down["delta"].to_numpy() == pytest.approx(-up["delta"].to_numpy())
    assert down["se"].to_numpy() == pytest.approx(up["se"].to_numpy())
    assert list(down["judgement"]) == list(up["judgement"]) == ["counts", "counts"]
    with pytest.raises(LayercritError, match="compares standard with itself"):
        claims(variants=["standard"])


def test_seeds_without_a_value_are_left_out_and_an_empty_side_is_missing():
    nan_seed = model("adv-s1", "adv", 1, 70.0, np.nan)
    table = lab(*REFERENCE, model("adv-s0", "adv", 0, 69.0, 22.0), nan_seed)
    cells, _ = judged({"criticality": table}, claims(rules={"measures": ["criticality"]}))
    assert list(cells["n"]) == [1, 1] and list(cells["judgement"]) == ["counts", "counts"]
    assert cells.loc[("criticality", "matched"), "delta"] == pytest.approx(22.0 - 10.0)
    empty = lab(*REFERENCE, model("adv-s0", "adv", 0, 69.0, np.nan), nan_seed)
    cells, verdicts = judged({"criticality": empty}, claims(rules={"measures": ["criticality"]}))
    assert set(cells["judgement"]) == {"missing"} and verdicts["verdict"].iloc[0] == "pending"


def test_the_matched_error_weighs_each_match_by_its_share_of_seeds():
    # three seeds: two matched to the 6-epoch run (70 %), one to standard seed 1 (86 %)
    table = lab(*REFERENCE, model("adv-s0", "adv", 0, 69.0, 22.0), model("adv-s1", "adv", 1, 70.5, 26.0),
                model("adv-s2", "adv", 2, 85.0, 30.0))
    cells, _ = judged({"criticality": table}, claims(rules={"measures": ["criticality"], "max_gap": 5.0}))
    matched = cells.loc[("criticality", "matched")]
    assert matched["delta"] == pytest.approx(np.mean([22.0 - 10.0, 26.0 - 10.0, 30.0 - 14.0]))
    s_ref2, s_adv2 = np.var([12, 14], ddof=1), np.var([22, 26, 30], ddof=1)
    assert matched["se"] == pytest.approx(np.sqrt(s_adv2 / 3 + s_ref2 * ((2 / 3) ** 2 + (1 / 3) ** 2)))


def test_variants_that_cannot_be_compared_are_one_error_naming_the_claim():
    other_arch = dict(model("vit-s0", "vit", 0, 80.0, 22.0), arch="vit")
    table = lab(*REFERENCE, model("adv-s0", "adv", 0, 69.0, 22.0), other_arch)
    with pytest.raises(LayercritError, match="claim c: vit is another architecture than standard"):
        judge_claims({"criticality": table}, claims(variants=["vit"]))
    with pytest.raises(LayercritError, match="claim c: standard epochs=6 is standard with another budget"):
        judge_claims({"criticality": table}, claims(variants=["adv"], against="standard epochs=6"))


@pytest.mark.parametrize("raw, needle", [
    ({"claims": [{"id": "a", "text": "t", "variants": ["x", "x"], "quantity": "avg"}]}, "variants names x twice"),
    ({"rules": {"measures": ["criticality", "criticality"]},
      "claims": [{"id": "a", "text": "t", "variants": "x", "quantity": "avg"}]}, "measures names criticality twice"),
    ({"claims": [{"id": "a", "text": "t", "variants": "x", "quantity": ["stage three"]}]},
     "quantity 'stage three': use avg, stem, stage 1"),
    ({"rules": {"floor": 6}, "claims": [{"id": "a", "text": "t", "variants": "x", "quantity": "avg"}]},
     "floor 6 is not below null_effect 5"),
    ({"claims": [{"id": "a", "text": "t", "variants": "x", "quantity": "avg", "floor": 5}]},
     "claim a floor 5 is not below [rules] null_effect 5"),
])
def test_duplicates_unknown_columns_and_floors_that_hide_every_effect_are_refused(raw, needle):
    with pytest.raises(LayercritError) as e:
        claims_from_dict(raw, "claims.toml")
    assert needle in str(e.value)


def test_a_variant_short_of_the_seeds_the_rules_ask_for_stays_pending():
    table = lab(*REFERENCE, model("adv-s0", "adv", 0, 69.0, 22.0))
    two = claims(rules={"measures": ["criticality"], "seeds": {"adv": 2}})
    cells, verdicts = judged({"criticality": table}, two)
    assert set(cells["judgement"]) == {"missing"} and list(cells["n"]) == [1, 1]
    assert verdicts["verdict"].iloc[0] == "pending" and "seeds" in verdicts["why"].iloc[0]
    reference_short = claims(rules={"measures": ["criticality"], "seeds": {"standard": 3}})
    assert judged({"criticality": table}, reference_short)[1]["verdict"].iloc[0] == "pending"
    table = lab(*REFERENCE, model("adv-s0", "adv", 0, 69.0, 22.0), model("adv-s1", "adv", 1, 70.0, 26.0))
    assert judged({"criticality": table}, two)[1]["verdict"].iloc[0] == "holds"
    with pytest.raises(LayercritError, match=r"\[rules\] seeds adv 0: must be an integer from 1"):
        claims(rules={"seeds": {"adv": 0}})
