#!/usr/bin/env bash
# Every derived file of this folder, from the study's runs (studies/runs/cifar10-converged/) and its results
# databases: the accuracy table, both exports, the report under each measure (the study's cosine, top-1
# disagreement, and the cosine at a fitted temperature from cifar10-converged-calibrated.db) with the lab tables,
# trajectory figures and round 1's verdicts (claims.toml), and round 2's pre-registered verdicts
# (claims-round2.toml: Welch intervals, three measures, three aggregations). Run from the project root, after
# `layercrit study run` (and the calibrated measurement, see README.md "Round 2"):
#   bash docs/results/cifar10-converged/reproduce.sh
set -euo pipefail
here=docs/results/cifar10-converged
db=$here/cifar10-converged.db
calibrated=$here/cifar10-converged-calibrated.db
layercrit study accuracies studies/cifar10-converged.toml --out $here/accuracies.csv
layercrit export --db $db --layout paper --out $here/results_paper.csv
layercrit export --db $db --out $here/results_tidy.csv
common=(--baseline standard-s0 --metadata $here/cifar10-converged.metadata.csv --lab $here/accuracies.csv)
for metric in criticality disagreement; do
    out=$here/report
    [ $metric = disagreement ] && out=$here/report-disagreement
    layercrit report --db $db "${common[@]}" --claims $here/claims.toml --metric $metric --out $out
done
if [ -f $calibrated ]; then
    layercrit export --db $calibrated --out $here/results_calibrated_tidy.csv
    layercrit report --db $db --calibrated-db $calibrated "${common[@]}" --claims $here/claims-round1-calibrated.toml \
        --metric calibrated --out $here/report-calibrated
    layercrit report --db $db --calibrated-db $calibrated "${common[@]}" --claims $here/claims-round2.toml \
        --metric calibrated --out $here/report-round2
    # exploratory (written after the data): round 2's rules at two seeds, i.e. round 1's seeds alone
    layercrit report --db $db --calibrated-db $calibrated "${common[@]}" \
        --claims $here/claims-round2-exploratory-2seeds.toml --metric calibrated --out $here/report-round2-exploratory
    # the README's round-2 tables: every final model under the three measures (and the miniature's reversal), and
    # the verdict cells (claim x measure x aggregation, 95 % intervals) of round 2 and of its exploratory reading
    python $here/calibrated_summary.py > $here/calibrated_summary.md
    for report in report-round2 report-round2-exploratory; do
        python $here/round2_table.py $report > $here/$report/verdict_table.md
    done
fi
