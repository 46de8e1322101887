"""The README's round-2 verdict table from a report's lab_claims.csv: one row per (claim, variant, comparison), one
column per (measure, aggregation), each cell "difference [95 % interval] judgement"; the primary pair first.
Run from the project root:  python docs/results/cifar10-converged/round2_table.py report-round2[-exploratory]"""
import sys

import pandas as pd

from layercrit.report.stages import markdown_table

report = sys.argv[1] if len(sys.argv) > 1 else "report-round2"
cells = pd.read_csv(f"docs/results/cifar10-converged/{report}/lab_claims.csv")
cells = cells[cells["judgement"] != "missing"]
if cells.empty:
    print(f"{report}: no cell has its seeds yet (every cell is missing)")
    sys.exit(0)
cells["cell"] = cells.apply(lambda r: f"{r['delta']:+.2f} [{r['lo']:+.2f}, {r['hi']:+.2f}] {r['judgement']}", axis=1)
cells["pair"] = cells["measure"] + " · " + cells["aggregation"] + cells["primary"].map({True: " (primary)",
                                                                                        False: ""})
order = cells.drop_duplicates("pair").sort_values("primary", ascending=False, kind="stable")["pair"].tolist()
table = cells.pivot_table(index=["claim", "variant", "comparison"], columns="pair", values="cell",
                          aggfunc="first").reindex(columns=order).fillna("–")
print(markdown_table(table.reset_index(), "s"))
