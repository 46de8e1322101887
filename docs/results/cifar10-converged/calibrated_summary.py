"""Run from the project root. Per final model: fitted T, average criticality by the cosine, the calibrated cosine and top-1 disagreement; the
final pgd-linf-8 minus standard difference (Welch 95 %) under each; rank correlations with clean top-1."""
import json
import sqlite3

import pandas as pd
from scipy import stats

from layercrit.analysis import load_results
from layercrit.analysis.stats import welch_contrast

here = "docs/results/cifar10-converged"
acc = pd.read_csv(f"{here}/accuracies.csv").set_index("model_id")
cal_db = f"{here}/cifar10-converged-calibrated.db"
T = {m: json.loads(c)["calibration"]["temperature"] for m, c in
     sqlite3.connect(cal_db).execute("select model_id, config from runs where finished is not null")}
avg = {}
for name, db, metric in (("cosine", f"{here}/cifar10-converged.db", "criticality"),
                         ("calibrated", cal_db, "calibrated"),
                         ("disagreement", f"{here}/cifar10-converged.db", "disagreement")):
    r = load_results([db], metric=metric, baseline="standard-s0")
    avg[name] = r.model_stats.set_index("model_id")["avg_criticality"]
table = pd.DataFrame({"T": pd.Series(T), **avg}).loc[list(T)]
table["clean_top1"] = acc["clean_test_acc"].reindex(table.index)
table["confidence"] = acc["mean_confidence"].reindex(table.index)
from layercrit.report.stages import markdown_table
print(markdown_table(table.reset_index(names="model_id"), ".3f"))
variants = acc["variant"]
final = acc["epoch"] == acc["final_epoch"]  # trajectory checkpoints are not seeds
def seeds(v, col):
    ids = [m for m in table.index if variants.get(m) == v and final.get(m, False)]
    return table.loc[ids, col].to_numpy()
print()
for col in ("cosine", "calibrated", "disagreement"):
    r = welch_contrast([(1, seeds("pgd-linf eps=8/255 steps=2", col)), (-1, seeds("standard", col))])
    print(f"pgd-linf-8 minus standard (final, 2 vs 2 seeds), {col}: {r['delta']:+.2f} [{r['lo']:+.2f}, {r['hi']:+.2f}] df {r['df']:.1f}")
    r = welch_contrast([(1, seeds("improved", col)), (-1, seeds("standard", col))])
    print(f"improved minus standard (final, 2 vs 2), {col}: {r['delta']:+.2f} [{r['lo']:+.2f}, {r['hi']:+.2f}]")
print()
lab = table[[variants.get(m) is not None and "resnet20" not in m and final.get(m, False) for m in table.index]]
for col in ("cosine", "calibrated", "disagreement"):
    rho, p = stats.spearmanr(lab["clean_top1"], lab[col])
    rc, pc = stats.spearmanr(lab["confidence"], lab[col])
    print(f"{col}: Spearman vs clean top-1 {rho:+.2f} (p {p:.3f}), vs confidence {rc:+.2f} (p {pc:.3f}), n {len(lab)}")
print()
# The 3-epoch miniature (../cifar10-methods): does calibration undo its reversal (pgd-linf-8 below standard)?
# Beside it, exploratory accuracy matches from this study: standard-s0's epoch-1 and epoch-3 checkpoints.
mini = "docs/results/cifar10-methods"
mini_T = {m: json.loads(c)["calibration"]["temperature"] for m, c in
          sqlite3.connect(f"{mini}/cifar10-methods-calibrated.db").execute(
              "select model_id, config from runs where finished is not null")}
mini_acc = pd.read_csv(f"{mini}/accuracies.csv").set_index("model_id")["clean_test_acc"]
rows = {}
for name, db, metric in (("cosine", f"{mini}/cifar10-methods.db", "criticality"),
                         ("calibrated", f"{mini}/cifar10-methods-calibrated.db", "calibrated"),
                         ("disagreement", f"{mini}/cifar10-methods.db", "disagreement")):
    rows[name] = load_results([db], metric=metric, baseline="standard").model_stats.set_index("model_id")[
        "avg_criticality"]
mini_table = pd.DataFrame({"T": pd.Series(mini_T), **rows}).loc[list(mini_T)]
mini_table["clean_top1"] = mini_acc.reindex(mini_table.index)
checkpoints = [m for m in ("standard-s0-e01", "standard-s0-e03") if m in T]
if checkpoints:
    r = {name: load_results([db], metric=metric, baseline="standard-s0").model_stats.set_index("model_id")[
        "avg_criticality"] for name, db, metric in (("cosine", f"{here}/cifar10-converged.db", "criticality"),
                                                    ("calibrated", cal_db, "calibrated"),
                                                    ("disagreement", f"{here}/cifar10-converged.db", "disagreement"))}
    extra = pd.DataFrame({"T": pd.Series({m: T[m] for m in checkpoints}),
                          **{k: v.reindex(checkpoints) for k, v in r.items()}})
    extra["clean_top1"] = acc["clean_test_acc"].reindex(checkpoints)
    mini_table = pd.concat([mini_table, extra])
print(markdown_table(mini_table.reset_index(names="model_id"), ".3f"))
