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
def seeds(v, col):
    ids = [m for m in table.index if variants.get(m) == v]
    return table.loc[ids, col].to_numpy()
print()
for col in ("cosine", "calibrated", "disagreement"):
    r = welch_contrast([(1, seeds("pgd-linf eps=8/255 steps=2", col)), (-1, seeds("standard", col))])
    print(f"pgd-linf-8 minus standard (final, 2 vs 2 seeds), {col}: {r['delta']:+.2f} [{r['lo']:+.2f}, {r['hi']:+.2f}] df {r['df']:.1f}")
    r = welch_contrast([(1, seeds("improved", col)), (-1, seeds("standard", col))])
    print(f"improved minus standard (final, 2 vs 2), {col}: {r['delta']:+.2f} [{r['lo']:+.2f}, {r['hi']:+.2f}]")
print()
lab = table[[variants.get(m) is not None and "resnet20" not in m for m in table.index]]
for col in ("cosine", "calibrated", "disagreement"):
    rho, p = stats.spearmanr(lab["clean_top1"], lab[col])
    rc, pc = stats.spearmanr(lab["confidence"], lab[col])
    print(f"{col}: Spearman vs clean top-1 {rho:+.2f} (p {p:.3f}), vs confidence {rc:+.2f} (p {pc:.3f}), n {len(lab)}")
