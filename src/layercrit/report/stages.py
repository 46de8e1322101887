"""stages.csv and stages.md: mean criticality per network stage, per model and per category."""
from __future__ import annotations

import pandas as pd

from ..analysis import Results


def stages_frame(study: Results) -> pd.DataFrame:
    """Rows ``kind`` = model (one per model) then category; columns name, category, n_models, avg, avg_std,
    stages... ``avg`` is a model's average over all its layers (the study's headline number) or a category's
    mean of its models' averages; ``avg_std`` the std of those averages over a category's models (the spread
    between its methods and seeds; empty for a model or a lone model)."""
    models = study.stage_stats.copy()
    category = study.models.set_index("model_id")["category"]
    averages = study.model_stats.set_index("model_id")["avg_criticality"]
    models.insert(0, "avg_std", float("nan"))
    models.insert(0, "avg", averages.reindex(models.index).to_numpy())
    models.insert(0, "n_models", 1)
    models.insert(0, "category", category.reindex(models.index).to_numpy())
    models.insert(0, "name", models.index)
    models.insert(0, "kind", "model")
    cats = study.category_stage_stats.copy()
    counts = category.value_counts()
    spread = study.category_stats.set_index("category")
    cats.insert(0, "avg_std", spread["std"].reindex(cats.index).to_numpy())
    cats.insert(0, "avg", spread["mean"].reindex(cats.index).to_numpy())
    cats.insert(0, "n_models", counts.reindex(cats.index).to_numpy())
    cats.insert(0, "category", cats.index)
    cats.insert(0, "name", cats.index)
    cats.insert(0, "kind", "category")
    return pd.concat([models, cats], ignore_index=True)


def markdown_table(df: pd.DataFrame, floatfmt: str = ".1f") -> str:
    """A GitHub markdown table; numbers right-aligned, NaN as an en dash."""
    def cell(v) -> str:
        if isinstance(v, float):
            return "–" if pd.isna(v) else format(v, floatfmt)
        return str(v).replace("|", "\\|")

    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    lines = ["| " + " | ".join(map(str, df.columns)) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def stages_markdown(study: Results) -> str:
    frame = stages_frame(study)
    stage_cols = list(study.stage_stats.columns)
    models = frame[frame["kind"] == "model"][["name", "category", "avg", *stage_cols]].rename(columns={"name": "model"})
    display = study.models.set_index("model_id")["display_name"]
    models["model"] = models["model"].map(display)  # readable here; stages.csv keeps the ids for joining
    cats = frame[frame["kind"] == "category"][["name", "n_models", "avg", "avg_std", *stage_cols]].rename(
        columns={"name": "category", "avg_std": "avg std"})
    return "\n".join([
        f"# Mean {study.metric_label} per network stage [%] (reset: {study.reset})", "",
        f"Mean over the stage's layers of the layer {study.metric_label} (itself the mean over trials); `avg` is the mean "
        "over all layers. A category's value is the mean over its models; `avg std` is the std of its models' "
        "averages (methods and seeds together; empty for one model).", "",
        "## Categories", "", markdown_table(cats), "",
        "## Models", "", markdown_table(models), "",
    ])
