"""Analysis: the study's tables and statistics as DataFrames (pandas/scipy only; no torch, no plotting).

    from layercrit.analysis import load_results
    results = load_results(["study.db"], paper_csvs=["paper.csv"], metadata="meta.csv")
    results.model_stats          # per model: category, accuracy, avg/std criticality, n_layers, n_trials
    results.matrix()             # models x layers, criticality [%]; results.delta() against the baseline
    results.stage_stats          # models x stages (stem, stage 1-4, head)
    results.correlation_table()  # Spearman / Kendall of accuracy vs average criticality

The functions in ``tables``, ``stats`` and ``layers`` work on plain frames too.
"""
from .compression import compression_markdown, compression_summary
from .layers import layer_frame, layer_label, layer_order, layer_stage, strip_prefix
from .metadata import META_COLUMNS, merge_metadata, read_metadata_csv, registry_metadata
from .sources import read_database, read_paper_csv
from .stats import DEFAULT_WITHOUT, correlation_table, correlations, rank_correlation
from .results import UNCATEGORIZED, ReportWarning, Results, load_results
from .summary import summary
from .claims import Claims, claims_from_dict, judge_claims, read_claims
from .lab import (accuracy_matched, lab_table, mechanism_table, read_lab_csv, seed_spread, trajectories,
                  versus_reference)
from .tables import (category_stage_table, category_table, criticality_matrix, delta_matrix, layer_table,
                     model_table, stage_table)

__all__ = ["Claims", "claims_from_dict", "judge_claims", "read_claims", "accuracy_matched", "lab_table", "mechanism_table", "read_lab_csv", "seed_spread", "trajectories",
           "versus_reference",
           "DEFAULT_WITHOUT", "META_COLUMNS", "UNCATEGORIZED", "ReportWarning", "Results", "category_stage_table",
           "category_table", "compression_markdown", "compression_summary", "correlation_table", "correlations", "criticality_matrix", "delta_matrix",
           "layer_frame", "layer_label", "layer_order", "layer_stage", "layer_table", "load_results",
           "merge_metadata", "model_table", "rank_correlation", "read_database", "read_metadata_csv",
           "read_paper_csv", "registry_metadata", "stage_table", "strip_prefix", "summary"]
