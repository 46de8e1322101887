"""The compression comparison's table, summarized (pandas only): one row per (model, N, rule)."""
from __future__ import annotations

import pandas as pd

RULE_ORDER = ["criticality", "magnitude", "random"]


def compression_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean (and, over random seeds, std) of accuracy and cost per (model, blocks removed, rule).

    ``table``: the rows of ``layercrit.compress.compare_rules`` (``compression.csv``).
    ``drop`` / ``finetuned_drop``: accuracy points lost against the full model.
    """
    t = table.assign(drop=table["base_top1_acc"] - table["top1_acc"],
                     finetuned_drop=table["base_top1_acc"] - table["finetuned_top1_acc"])
    grouped = t.groupby(["model_id", "n_removed", "rule"], sort=False)
    out = grouped.agg(variants=("seed", "size"), base_top1_acc=("base_top1_acc", "first"),
                      top1_acc=("top1_acc", "mean"), top1_acc_std=("top1_acc", "std"),
                      finetuned_top1_acc=("finetuned_top1_acc", "mean"),
                      finetuned_top1_acc_std=("finetuned_top1_acc", "std"),
                      drop=("drop", "mean"), finetuned_drop=("finetuned_drop", "mean"),
                      params_ratio=("params_ratio", "mean"), flops_ratio=("flops_ratio", "mean"),
                      speedup_b1=("speedup_b1", "mean"), speedup_b64=("speedup_b64", "mean"),
                      blocks=("blocks", lambda b: " | ".join(b))).reset_index()
    out["rule"] = pd.Categorical(out["rule"], [r for r in RULE_ORDER if r in set(out["rule"])] +
                                 sorted(set(out["rule"]) - set(RULE_ORDER)), ordered=True)
    models = list(dict.fromkeys(table["model_id"]))
    out["model_id"] = pd.Categorical(out["model_id"], models, ordered=True)
    return out.sort_values(["model_id", "n_removed", "rule"]).reset_index(drop=True)


def compression_markdown(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table (random rule: mean ± std over seeds)."""
    def acc(mean, std):
        if pd.isna(mean):
            return "–"
        return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"

    lines = ["| model | blocks removed | rule | top-1 full | top-1 | top-1 fine-tuned | params | FLOPs "
             "| speed-up b1 | speed-up b64 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary.itertuples():
        lines.append(f"| {r.model_id} | {r.n_removed} | {r.rule}{f' (x{r.variants})' if r.variants > 1 else ''} "
                     f"| {r.base_top1_acc:.2f} | {acc(r.top1_acc, r.top1_acc_std)} "
                     f"| {acc(r.finetuned_top1_acc, r.finetuned_top1_acc_std)} | {r.params_ratio:.1%} "
                     f"| {r.flops_ratio:.1%} | {r.speedup_b1:.2f}x | {r.speedup_b64:.2f}x |")
    return "\n".join(lines) + "\n"
