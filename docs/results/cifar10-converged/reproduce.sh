#!/usr/bin/env bash
# Every derived file of this folder, from the study's runs (studies/runs/cifar10-converged/) and its results
# database: the accuracy table, both exports, the report under each measure with the lab tables, trajectory
# figures and the claims' verdicts (claims.toml). Run from the project root, after `layercrit study run`:
#   bash docs/results/cifar10-converged/reproduce.sh
set -euo pipefail
here=docs/results/cifar10-converged
db=$here/cifar10-converged.db
layercrit study accuracies studies/cifar10-converged.toml --out $here/accuracies.csv
layercrit export --db $db --layout paper --out $here/results_paper.csv
layercrit export --db $db --out $here/results_tidy.csv
for metric in criticality disagreement; do
    out=$here/report
    [ $metric = disagreement ] && out=$here/report-disagreement
    layercrit report --db $db --baseline standard-s0 --metadata $here/cifar10-converged.metadata.csv \
        --lab $here/accuracies.csv --claims $here/claims.toml --metric $metric --out $out
done
