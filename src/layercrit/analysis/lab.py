"""Training-lab tables: measurements joined with what each model is (method, seed, epoch) and how
accurate and confident it is (``layercrit study accuracies``), for controlled comparisons.

    from layercrit.analysis import load_results, read_lab_csv, lab_table, seed_spread, accuracy_matched
    lab = lab_table(load_results(["lab.db"]), read_lab_csv("accuracies.csv"))
    seed_spread(lab)                      # per variant: mean, std, min, max over seeds of every number
    accuracy_matched(lab, "standard")     # each model against the standard model of nearest accuracy, like with like
    versus_reference(lab, "standard")     # each variant's seed mean minus standard's, with its standard error
    mechanism_table(lab)                  # rank correlations of the average value with accuracy and confidence
    trajectories(lab)                     # the checkpoints of each (variant, seed) in epoch order

A *variant* is a method with its settings ("pgd-linf eps=8/255 steps=2"); its runs differ only in the seed.
A model's *value* is the Results' metric (criticality or top-1 disagreement), averaged over layers
(``avg``) and per network stage. The "final" models are each run's last epoch; checkpoints taken on
the way are the trajectory. Comparisons between models (matching, differences, correlations) stay within
one architecture: stage names coincide across architectures, what they hold does not.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError, LayercritError
from .layers import HEAD, STEM, ordered_stages
from .results import Results
from .stats import rank_correlation

LAB_REQUIRED = ("model_id", "method", "seed", "epoch", "final_epoch", "clean_test_acc")
LAB_OPTIONAL = ("variant", "robust_test_acc", "mean_confidence", "mean_entropy", "train_seconds",
                "started_after_claims")
LAB_NUMERIC = ("seed", "epoch", "final_epoch", "clean_test_acc", "robust_test_acc", "mean_confidence", "mean_entropy",
               "train_seconds")
AVG = "avg"
# How a set of stages becomes one number per model: the mean of its stage means (the one-layer stem weighs as much
# as a 19-layer stage), the mean over its layers (each layer once), or that without the stem and the head.
AGGREGATIONS = ("stages", "pooled", "core")
SPREAD_QUANTITIES = ("clean_test_acc", "robust_test_acc", "mean_confidence", "mean_entropy", AVG)
MECHANISM_AGAINST = {"clean_test_acc": "clean top-1", "mean_confidence": "mean confidence",
                     "mean_entropy": "mean entropy"}


# The lab table's messages name it as the report's parameter (write_report's and lab_table's lab; the CLI's
# flag); a caller of read_lab_csv reads its own parameter: path.
_AS_PATH = {"lab": "path"}


def read_lab_csv(path: str | Path) -> pd.DataFrame:
    """The table of ``layercrit study accuracies`` (one row per model: method, seed, epoch, accuracies, confidence)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"lab table not found: {path}: make it with `layercrit study accuracies`, or check {{lab}}",
                          ("lab",), python=_AS_PATH)
    try:
        df = pd.read_csv(path, dtype={"model_id": str, "method": str, "variant": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not a readable CSV ({str(e).splitlines()[0]}): check {{lab}}", ("lab",),
                          python=_AS_PATH) from None
    return check_lab_frame(df, str(path), python=_AS_PATH)


def check_lab_frame(df: pd.DataFrame, where: str = "the lab table", *,
                    python: dict[str, str] | None = None) -> pd.DataFrame:
    """The frame with its numeric columns as floats; one clear error for a missing column or a bad value (a
    :class:`ConfigError` about ``lab``, which ``python`` may call otherwise, see :class:`layercrit.errors.NamedFields`)."""
    def check(problem: str) -> ConfigError:
        return ConfigError(problem + ": check {lab}", ("lab",), python=python)

    missing = [c for c in LAB_REQUIRED if c not in df.columns]
    if missing:
        raise check(f"{where} has no column {', '.join(missing)} (it is the CSV of `layercrit study accuracies`)")
    dupes = df["model_id"][df["model_id"].duplicated()].unique()
    if len(dupes):
        raise check(f"{where} lists model id(s) {', '.join(map(str, dupes))} more than once")
    df = df.copy()
    for col in LAB_NUMERIC:
        if col not in df.columns:
            df[col] = np.nan
        values = pd.to_numeric(df[col], errors="coerce")
        bad = df[col][values.isna() & df[col].notna()]
        if len(bad):
            raise check(f"{where}: {col} '{bad.iloc[0]}' is not a number")
        df[col] = values.astype(float)
    df["model_id"] = df["model_id"].astype(str)
    # runs of one variant (method + settings beyond the seed) are seeds of each other; tables without the
    # column (or models without a variant) count the method as the variant
    # (a model given to the study, not trained by it, has no method: it is a variant of its own)
    variant = df["variant"] if "variant" in df.columns else pd.Series(None, index=df.index, dtype=object)
    method = df["method"].where(df["method"].notna(), df["model_id"])
    df["variant"] = variant.where(variant.notna(), method).astype(str)
    return df


def lab_table(results: Results, lab: pd.DataFrame) -> pd.DataFrame:
    """One row per model that is both measured and in the lab table: model_id, category, method, seed, epoch,
    final (the run's last epoch), accuracies, confidence, entropy, ``avg`` and one column per stage (the
    Results' metric in percent). Models only on one side are left out (``results`` may hold others)."""
    lab = check_lab_frame(lab)
    stages = results.stage_stats
    values = results.model_stats.set_index("model_id")[["category", "avg_criticality"]].rename(
        columns={"avg_criticality": AVG}).join(results.models.set_index("model_id")["arch"]).join(stages)
    keep = [c for c in (*LAB_REQUIRED, *LAB_OPTIONAL) if c in lab.columns]
    table = lab[keep].merge(values, left_on="model_id", right_index=True, how="inner")
    if table.empty:
        raise ConfigError("no model is both in the results and in the lab table: check that {lab} belongs to "
                          "these databases", ("lab",))
    # a given model (no epochs known) counts as final: it is the model as its authors finished it
    final = (table["epoch"] == table["final_epoch"]) | table["epoch"].isna()
    table.insert(table.columns.get_loc("final_epoch") + 1, "final", final)
    return table.sort_values(["variant", "seed", "epoch"], kind="stable").reset_index(drop=True)


def stage_columns(table: pd.DataFrame) -> list[str]:
    """The stage columns of a lab table, in network order."""
    known = set(LAB_REQUIRED) | set(LAB_OPTIONAL) | {"category", "arch", "final", AVG}
    return ordered_stages([c for c in table.columns if c not in known])


def seed_spread(table: pd.DataFrame) -> pd.DataFrame:
    """Per variant over its final models (one per seed): n, seeds, then mean, std (ddof=1; NaN for one seed),
    min and max of accuracy, confidence, entropy, the average value and each stage's, in long form
    (variant, quantity, n, seeds, mean, std, min, max)."""
    finals = table[table["final"]]
    rows = []
    for variant, group in finals.groupby("variant", sort=False):
        seeds = ",".join(str(int(s)) for s in sorted(group["seed"].dropna()))
        for quantity in [*SPREAD_QUANTITIES, *stage_columns(table)]:
            values = group[quantity].dropna() if quantity in group else pd.Series(dtype=float)
            if values.empty:
                continue
            rows.append({"variant": variant, "quantity": quantity, "n": len(values), "seeds": seeds,
                         "mean": values.mean(), "std": values.std(ddof=1) if len(values) > 1 else np.nan,
                         "min": values.min(), "max": values.max()})
    return pd.DataFrame(rows, columns=["variant", "quantity", "n", "seeds", "mean", "std", "min", "max"])


def _reference_models(table: pd.DataFrame, reference: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the reference variant's models, the other variants' models of the same architecture)."""
    refs = table[(table["variant"] == reference) & table["clean_test_acc"].notna()]
    if refs.empty:
        raise LayercritError(f"no model of variant '{reference}' with a clean accuracy to compare against: "
                             "choose another reference")
    others = table[(table["variant"] != reference) & table["arch"].isin(set(refs["arch"]))]
    return refs, others


def budget_family(table: pd.DataFrame, reference: str) -> pd.Series:
    """Which rows are ``reference`` or the reference with only another budget (``standard epochs=6`` beside
    ``standard``): runs that finished their schedule at another accuracy."""
    ref = reference.split()

    def other_budget(variant: str) -> bool:
        words = variant.split()
        return words[:1] == ref[:1] and sorted(w for w in words[1:] if not w.startswith("epochs=")) == \
            sorted(w for w in ref[1:] if not w.startswith("epochs="))

    return table["variant"].map(lambda v: v == reference or other_budget(v))


def accuracy_matched(table: pd.DataFrame, reference: str = "standard") -> pd.DataFrame:
    """Each model of another variant (of the reference's architecture) against the model of the ``reference``
    variant, or of the reference with another budget, whose clean top-1 is nearest, *like with like*: a final
    model against final models (runs that finished their schedule, any budget), a checkpoint against
    checkpoints, because criticality jumps over a run's last, low-learning-rate epochs. Both accuracies, the
    gap, and the difference (model minus match) of the average value and of every stage, in percentage points.
    Where the reference has no model of the same kind, the nearest of any kind is taken (``like`` False)."""
    _, others = _reference_models(table, reference)
    family = table[budget_family(table, reference) & table["clean_test_acc"].notna()]
    others = others[~others["model_id"].isin(family["model_id"])]
    stages = stage_columns(table)
    rows = []
    for row in others[others["clean_test_acc"].notna()].to_dict("records"):
        same_kind = family[family["final"] == row["final"]]
        candidates = same_kind if not same_kind.empty else family
        gaps = (candidates["clean_test_acc"] - row["clean_test_acc"]).abs()
        match = candidates.loc[gaps.idxmin()]  # ties: the first in (variant, seed, epoch) order
        out = {k: row[k] for k in ("model_id", "variant", "seed", "epoch", "final", "clean_test_acc")}
        out.update(matched_id=match["model_id"], like=not same_kind.empty, matched_acc=match["clean_test_acc"],
                   acc_gap=row["clean_test_acc"] - match["clean_test_acc"], avg=row[AVG], matched_avg=match[AVG],
                   delta_avg=row[AVG] - match[AVG])
        for stage in stages:
            out[f"delta {stage}"] = row[stage] - match[stage]
        rows.append(out)
    return pd.DataFrame(rows)


def versus_reference(table: pd.DataFrame, reference: str = "standard") -> pd.DataFrame:
    """Each other variant (of the reference's architecture) against the ``reference`` variant, over final
    models: per quantity (accuracy, confidence, the average value, each stage) both seed means, their
    difference (variant minus reference) and its standard error sqrt(s_v^2/n_v + s_r^2/n_r).

    Where one side has a single seed its between-seed std is unknown and the other side's stands in for it
    (``se_from`` says which seeds the error rests on: "both", "reference", "variant"; NaN where neither
    side has two seeds)."""
    refs, others = _reference_models(table, reference)
    refs, others = refs[refs["final"]], others[others["final"]]
    rows = []
    for variant, group in others.groupby("variant", sort=False):
        for quantity in ["clean_test_acc", "robust_test_acc", "mean_confidence", AVG, *stage_columns(table)]:
            if quantity not in table:
                continue
            v, r = group[quantity].dropna(), refs[quantity].dropna()
            if v.empty or r.empty:
                continue
            rows.append({"variant": variant, "quantity": quantity, **seed_difference(v, r)})
    return pd.DataFrame(rows, columns=["variant", "quantity", "n", "reference_n", "mean", "reference_mean", "delta",
                                       "std", "reference_std", "se", "se_from"])


def seed_difference(values: pd.Series, reference: pd.Series) -> dict:
    """Seed means of two samples (one value per seed), their difference and its standard error
    sqrt(s_v^2/n_v + s_r^2/n_r); where one side has a single seed, the other side's std stands in for its own
    (``se_from``: "both", "reference", "variant"; "" and se NaN where neither side has two seeds)."""
    v, r = values.dropna(), reference.dropna()
    sd_v, sd_r = seed_std(v), seed_std(r)
    se_from = "both" if len(v) > 1 and len(r) > 1 else "reference" if len(r) > 1 else "variant" if len(v) > 1 else ""
    return {"n": len(v), "reference_n": len(r), "mean": v.mean(), "reference_mean": r.mean(),
            "delta": v.mean() - r.mean(), "std": sd_v, "reference_std": sd_r,
            "se": standard_error([(sd_v, len(v)), (sd_r, len(r))], stand_in=sd_r if len(r) > 1 else sd_v),
            "se_from": se_from}


def seed_std(values: pd.Series) -> float:
    """The between-seed sample std (ddof=1); NaN for fewer than two seeds."""
    values = values.dropna()
    return float(values.std(ddof=1)) if len(values) > 1 else np.nan


def standard_error(terms: Sequence[tuple[float, float]], stand_in: float) -> float:
    """sqrt(sum s_i^2 / n_i) over (std, count) terms (a count may be an effective one), ``stand_in`` for a std that is NaN (a single seed)."""
    if any(n <= 0 for _, n in terms):
        raise ValueError("standard_error: every term needs at least one value")
    return float(np.sqrt(sum((stand_in if np.isnan(s) else s) ** 2 / n for s, n in terms)))


def mechanism_table(table: pd.DataFrame) -> pd.DataFrame:
    """Rank correlations (Spearman, Kendall) of the average value with clean top-1, mean confidence and mean
    entropy, over the final models and over all models (checkpoints included), within each architecture that
    has at least three models (a lone model of another architecture is left out, not pooled)."""
    rows = []
    for arch, models in table.groupby("arch", sort=False):
        for subset, frame in (("final models", models[models["final"]]), ("all models (with checkpoints)", models)):
            if len(frame) < 3:
                continue
            for column, label in MECHANISM_AGAINST.items():
                if column not in frame:
                    continue
                c = rank_correlation(frame[column], frame[AVG])
                rows.append({"arch": arch, "subset": subset, "against": label, "n": c["n"],
                             "spearman_rho": c["spearman"]["rho"], "spearman_p": c["spearman"]["p"],
                             "kendall_tau": c["kendall"]["tau"], "kendall_p": c["kendall"]["p"]})
    return pd.DataFrame(rows, columns=["arch", "subset", "against", "n", "spearman_rho", "spearman_p", "kendall_tau",
                                       "kendall_p"])


def trajectories(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of every (variant, seed) measured at two or more epochs, in (variant, seed, epoch) order."""
    counts = table.groupby(["variant", "seed"])["epoch"].transform("nunique")
    return table[counts >= 2].sort_values(["variant", "seed", "epoch"], kind="stable").reset_index(drop=True)


def aggregated(layer_stats: pd.DataFrame, stages: Sequence[str], aggregation: str) -> pd.Series:
    """Per model (index model_id): the mean value of the layers in ``stages`` (``avg``: every stage) by one of
    ``AGGREGATIONS``. ``layer_stats``: one row per (model, layer) with ``stage`` and ``criticality`` (the Results'
    metric), as :attr:`Results.layer_stats`. NaN where none of the model's layers is left (``core`` of the stem)."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation {aggregation!r}: use one of {', '.join(AGGREGATIONS)}")
    rows = layer_stats if AVG in stages else layer_stats[layer_stats["stage"].isin(stages)]
    if aggregation == "core":
        rows = rows[~rows["stage"].isin([STEM, HEAD])]
    models = pd.Index(layer_stats["model_id"].unique(), name="model_id")
    if aggregation == "stages":
        values = rows.groupby(["model_id", "stage"])["criticality"].mean().groupby("model_id").mean()
    else:
        values = rows.groupby("model_id")["criticality"].mean()
    return values.reindex(models)
