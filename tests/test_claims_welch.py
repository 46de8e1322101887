"""Claims under `test = "welch"` (the converged lab's round 2): Welch intervals over seeds, the three aggregations,
accuracy matching by variant, the primary / sensitivity verdicts, and the pre-registration check against git."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from layercrit.analysis import claims_from_dict, judge_claims
from layercrit.analysis.claims import sensitivity
from layercrit.analysis.lab import aggregated
from layercrit.errors import LayercritError

# a toy network: stem (1 layer), stage 1 (2 layers), stage 3 (3 layers), head (1 layer)
LAYERS = [("conv1", "stem"), ("l1a", "stage 1"), ("l1b", "stage 1"), ("l3a", "stage 3"), ("l3b", "stage 3"),
          ("l3c", "stage 3"), ("fc", "head")]


def model_rows(model_id: str, deep: float, shallow: float = 10.0, stem: float = 50.0) -> list[dict]:
    value = {"stem": stem, "stage 1": shallow, "stage 3": deep, "head": 5.0}
    return [{"model_id": model_id, "layer": name, "stage": stage, "criticality": value[stage]} for name, stage in LAYERS]


def lab_row(model_id: str, variant: str, seed: int, acc: float) -> dict:
    return {"model_id": model_id, "method": variant.split()[0], "variant": variant, "seed": seed, "epoch": 40,
            "final_epoch": 40, "final": True, "arch": "toy", "clean_test_acc": acc}


def build(models: list[tuple[str, str, int, float, float]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(lab table, layer stats) for (model id, variant, seed, accuracy, deep-stage value) tuples."""
    table = pd.DataFrame([lab_row(m, v, s, a) for m, v, s, a, _ in models])
    layers = pd.DataFrame([r for m, _, _, _, deep in models for r in model_rows(m, deep)])
    return table, layers


STD = [("std-s0", "standard", 0, 87.0, 20.0), ("std-s1", "standard", 1, 86.0, 22.0), ("std-s2", "standard", 2, 86.5, 21.0)]
SHORT = [("short-s0", "standard epochs=6", 0, 70.0, 12.0), ("short-s1", "standard epochs=6", 1, 71.0, 13.0),
         ("short-s2", "standard epochs=6", 2, 69.5, 11.0)]
ADV = [("adv-s0", "adv", 0, 70.0, 30.0), ("adv-s1", "adv", 1, 69.0, 34.0), ("adv-s2", "adv", 2, 70.5, 32.0)]


def welch_claims(**claim) -> object:
    rules = claim.pop("rules", {})
    return claims_from_dict({"rules": {"test": "welch", "measures": ["criticality"], "aggregations": ["pooled",
                                       "stages", "core"], "seeds": {"standard": 3, "adv": 3}, **rules},
                             "claims": [{"id": "c", "text": "t", "variants": ["adv"], "quantity": ["stage 3"],
                                         **claim}]})


def test_aggregations_weigh_layers_as_defined():
    _, layers = build([("m", "standard", 0, 80.0, 30.0)])
    # pooled: each layer once (50 + 10 + 10 + 30*3 + 5) / 7; stages: mean of the 4 stage means; core: no stem/head
    assert aggregated(layers, ["avg"], "pooled")["m"] == pytest.approx((50 + 20 + 90 + 5) / 7)
    assert aggregated(layers, ["avg"], "stages")["m"] == pytest.approx((50 + 10 + 30 + 5) / 4)
    assert aggregated(layers, ["avg"], "core")["m"] == pytest.approx((20 + 90) / 5)
    assert aggregated(layers, ["stem", "stage 1"], "stages")["m"] == pytest.approx((50 + 10) / 2)
    assert aggregated(layers, ["stem", "stage 1"], "pooled")["m"] == pytest.approx((50 + 20) / 3)
    assert np.isnan(aggregated(layers, ["stem"], "core")["m"])  # nothing left of the stem without the stem


def test_final_cell_is_scipys_welch_interval_and_counts():
    table, layers = build(STD + SHORT + ADV)
    cells, verdicts = judge_claims({"criticality": table}, welch_claims(), {"criticality": layers})
    final = cells[(cells["comparison"] == "final") & (cells["aggregation"] == "pooled")].iloc[0]
    expected = stats.ttest_ind([30, 34, 32], [20, 22, 21], equal_var=False)
    lo, hi = expected.confidence_interval(0.95)
    assert final["delta"] == pytest.approx(11.0) and final["df"] == pytest.approx(expected.df)
    assert (final["lo"], final["hi"]) == (pytest.approx(lo), pytest.approx(hi))
    assert final["judgement"] == "counts" and bool(final["primary"])
    # matched: adv (mean 69.8 %) against the 6-epoch standard (70.2 %), not the 40-epoch one
    matched = cells[(cells["comparison"] == "matched") & (cells["aggregation"] == "pooled")].iloc[0]
    assert matched["matched"] == "standard epochs=6" and matched["delta"] == pytest.approx(32.0 - 12.0)
    assert matched["max_acc_gap"] == pytest.approx(abs(69.833333 - 70.166667), abs=1e-4)
    assert verdicts.set_index("variant").loc["adv", "verdict"] == "holds"


def test_interval_judgements_and_the_verdict_rule():
    # adv equal to standard within noise: an interval around 0 inside +-5 -> no difference in both cells
    flat = [(m, v, s, a, 21.0 + 0.5 * (s - 1)) for m, v, s, a, _ in ADV]
    table, layers = build(STD + [(m, v, s, a, 21.0 - 0.5 * (s - 1)) for m, v, s, a, _ in SHORT] + flat)
    claims = welch_claims(comparisons=["final"])
    cells, verdicts = judge_claims({"criticality": table}, claims, {"criticality": layers})
    assert set(cells.loc[cells["primary"], "judgement"]) == {"no difference"}
    assert verdicts.iloc[0]["verdict"] == "does not hold"
    # the claimed direction reversed: the same numbers count against
    cells, verdicts = judge_claims({"criticality": build(STD + SHORT + ADV)[0]}, welch_claims(direction="lower"),
                                   {"criticality": build(STD + SHORT + ADV)[1]})
    assert set(cells["judgement"]) == {"counts against"} and verdicts.iloc[0]["verdict"] == "does not hold"
    # widely spread seeds: an interval that reaches beyond +-5 around 0 -> unclear -> inconclusive
    noisy = [("adv-s0", "adv", 0, 70.0, 5.0), ("adv-s1", "adv", 1, 69.0, 40.0), ("adv-s2", "adv", 2, 70.5, 18.0)]
    table, layers = build(STD + SHORT + noisy)
    cells, verdicts = judge_claims({"criticality": table}, welch_claims(), {"criticality": layers})
    assert set(cells["judgement"]) == {"unclear"} and verdicts.iloc[0]["verdict"] == "inconclusive"


def test_missing_seeds_and_far_matches():
    table, layers = build(STD + SHORT + ADV[:2])  # the rules ask 3 seeds of adv
    cells, verdicts = judge_claims({"criticality": table}, welch_claims(), {"criticality": layers})
    assert set(cells["judgement"]) == {"missing"} and verdicts.iloc[0]["verdict"] == "pending"
    far = [(m, v, s, a + 10.0, d) for m, v, s, a, d in ADV]  # 80 %: 6.5 points from both standards
    table, layers = build(STD + SHORT + far)
    cells, verdicts = judge_claims({"criticality": table}, welch_claims(), {"criticality": layers})
    assert set(cells.loc[cells["comparison"] == "matched", "judgement"]) == {"not matched"}
    assert verdicts.iloc[0]["verdict"] == "inconclusive"


def test_against_another_variant_and_a_shared_match_cancels():
    weak = [("weak-s0", "weak", 0, 70.2, 25.0), ("weak-s1", "weak", 1, 69.6, 27.0), ("weak-s2", "weak", 2, 70.0, 26.0)]
    table, layers = build(STD + SHORT + ADV + weak)
    claims = welch_claims(against="weak", rules={"seeds": {"weak": 3, "adv": 3}})
    cells, _ = judge_claims({"criticality": table}, claims, {"criticality": layers})
    matched = cells[(cells["comparison"] == "matched") & (cells["aggregation"] == "pooled")].iloc[0]
    # both sides match the 6-epoch standard: it cancels, leaving adv minus weak with only their two groups' noise
    direct = stats.ttest_ind([30, 34, 32], [25, 27, 26], equal_var=False)
    assert matched["delta"] == pytest.approx(6.0) and matched["df"] == pytest.approx(direct.df)
    assert matched["matched"] == "standard epochs=6 / standard epochs=6"


def test_primary_and_sensitivity_pairs():
    table, layers = build(STD + SHORT + ADV)
    table2 = table.copy()
    layers2 = layers.assign(criticality=-layers["criticality"])  # a second measure in which the effect reverses
    claims = claims_from_dict({"rules": {"test": "welch", "measures": ["calibrated", "criticality"],
                                         "primary_measure": "criticality", "aggregations": ["stages", "pooled"],
                                         "primary_aggregation": "pooled", "seeds": {"adv": 3, "standard": 3}},
                               "claims": [{"id": "c", "text": "t", "variants": ["adv"], "quantity": ["stage 3"]}]})
    cells, verdicts = judge_claims({"criticality": table, "calibrated": table2}, claims,
                                   {"criticality": layers, "calibrated": layers2})
    assert set(cells.loc[cells["primary"], "measure"]) == {"criticality"}
    assert set(cells.loc[cells["primary"], "aggregation"]) == {"pooled"}
    assert verdicts.iloc[0]["verdict"] == "holds"
    grid = sensitivity(cells).set_index(["measure", "aggregation"])["verdict"]
    assert grid[("calibrated", "pooled")] == "does not hold" and grid[("criticality", "stages")] == "holds"


def test_welch_rules_are_checked():
    with pytest.raises(LayercritError, match="floor"):
        welch_claims(rules={"floor": 3.9})
    with pytest.raises(LayercritError, match="primary_measure"):
        welch_claims(rules={"primary_measure": "disagreement"})  # not among its measures
    with pytest.raises(LayercritError, match="aggregations"):
        welch_claims(rules={"aggregations": ["median"]})
    with pytest.raises(LayercritError, match="comparisons"):
        welch_claims(comparisons=["paired"])
    with pytest.raises(LayercritError, match="confidence"):
        welch_claims(rules={"confidence": 1.5})


def git(repo: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": "/usr/bin:/bin", "HOME": str(repo)}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def test_registration_says_whether_the_claims_were_committed_before_every_run(tmp_path):
    from layercrit.report.lab import with_registration

    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a").write_text("a")
    git(repo, "add", "a")
    git(repo, "commit", "-qm", "before the claims")
    before = git(repo, "rev-parse", "HEAD")
    claims_file = repo / "claims.toml"
    claims_file.write_text(json.dumps({}))
    git(repo, "add", "claims.toml")
    git(repo, "commit", "-qm", "claims")
    after = git(repo, "rev-parse", "HEAD")
    when = git(repo, "log", "-1", "--format=%cI")
    later = (pd.Timestamp(when) + pd.Timedelta(minutes=5)).isoformat()
    earlier = (pd.Timestamp(when) - pd.Timedelta(days=1)).isoformat()
    table, layers = build(STD + SHORT + ADV)
    # the standard and 6-epoch runs are old (no start recorded, finished from a checkout without the claims);
    # the adv runs started after the claims from a checkout that holds them
    prov = {m: {"start_git_commit": None, "started_at": None, "finish_git_commit": before} for m, *_ in STD + SHORT}
    prov |= {m: {"start_git_commit": after, "started_at": later, "finish_git_commit": after} for m, *_ in ADV}
    lab = table.assign(**{k: [prov[m][k] for m in table["model_id"]] for k in ("start_git_commit", "started_at",
                                                                                "finish_git_commit")})
    flagged = with_registration(lab, str(claims_file)).set_index("model_id")["started_after_claims"]
    assert flagged["adv-s0"] is True and flagged["std-s0"] is False
    # a run that recorded a start before the claims' commit (clock) is not pre-registered either
    odd = lab.assign(started_at=[earlier if m == "adv-s1" else s for m, s in zip(lab["model_id"], lab["started_at"])])
    assert with_registration(odd, str(claims_file)).set_index("model_id").loc["adv-s1", "started_after_claims"] is False
    claims = welch_claims(comparisons=["final"])
    table = with_registration(lab, str(claims_file))
    _, verdicts = judge_claims({"criticality": table}, claims, {"criticality": layers})
    assert verdicts.iloc[0]["registration"] == "after the data: 3 of 6 runs started before the claims file"
    # against runs that all started after the claims: pre-registered
    only_new = table.assign(started_after_claims=[True] * len(table))
    _, verdicts = judge_claims({"criticality": only_new}, claims, {"criticality": layers})
    assert verdicts.iloc[0]["registration"] == "pre-registered"
    unknown = table.assign(started_after_claims=[None if m.startswith("std") else True for m in table["model_id"]])
    _, verdicts = judge_claims({"criticality": unknown}, claims, {"criticality": layers})
    assert verdicts.iloc[0]["registration"] == "unknown: 3 of 6 runs do not record when they started"


def test_a_quantity_that_names_no_stage_is_refused_not_pending_forever():
    table, layers = build(STD + SHORT + ADV)
    with pytest.raises(LayercritError, match=r"claim c: stage 5 is no stage of the measured models \(they have "
                                             r"head, stage 1, stage 3, stem\)"):
        judge_claims({"criticality": table}, welch_claims(quantity=["stage 5"]), {"criticality": layers})
    with pytest.raises(LayercritError, match="claim c: stage 2 is no stage"):
        judge_claims({"criticality": table}, welch_claims(minus=["stage 2"]), {"criticality": layers})
