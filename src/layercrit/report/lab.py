"""The training-lab part of a report (``layercrit report --lab accuracies.csv``): tables as CSV and one
Markdown page, trajectory figures."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from ..analysis import Results
from ..analysis.claims import ALL_VARIANTS, COMPARISONS, Claims, judge_claims, sensitivity
from ..analysis.lab import (AVG, SPREAD_QUANTITIES, accuracy_matched, lab_table, mechanism_table, seed_spread,
                            stage_columns, trajectories, versus_reference)
from ..errors import ConfigError
from ..provenance import first_commit, is_ancestor
from .stages import markdown_table
from .style import save_figure
from .trajectory import trajectory_figure

DEFAULT_REFERENCE = "standard"


def lab_outputs(study: Results, lab: pd.DataFrame, reference: str | None = None, claims: Claims | None = None,
                claim_results: tuple[Results, ...] = ()) -> tuple[dict[str, pd.DataFrame], dict[str, Figure], str]:
    """(tables by file stem, figures by file stem, the Markdown page) for a lab table.

    ``reference``: the variant the accuracy-matched comparison matches against (default "standard" where
    the lab has it; an error when named and absent). ``claims`` (:func:`layercrit.analysis.read_claims`):
    judged into lab_claims.csv (every cell) and lab_verdicts.csv, under ``study``'s measure and those of
    ``claim_results`` (the same databases loaded with another ``metric``)."""
    if claims is not None:
        lab = with_registration(lab, claims.source)
    table, reference = checked_lab(study, lab, reference)
    tables = {"lab_models": table, "lab_seeds": seed_spread(table), "lab_mechanism": mechanism_table(table)}
    if reference is not None and (table["variant"] != reference).any():
        tables["lab_matched"] = accuracy_matched(table, reference)
        tables["lab_versus"] = versus_reference(table, reference)
    if claims is not None:
        measured = (*claim_results, study)
        by_measure = {r.metric: lab_table(r, lab) for r in measured}
        layers = {r.metric: r.layer_stats for r in measured}
        tables["lab_claims"], tables["lab_verdicts"] = judge_claims(by_measure, claims, layers)
        if claims.rules.test == "welch":
            tables["lab_sensitivity"] = sensitivity(tables["lab_claims"])
    figures = {}
    paths = trajectories(table)
    if not paths.empty:
        # beside the runs' paths: the other final models of the same architecture(s) (stages differ across them)
        others = table[table["final"] & ~table["model_id"].isin(paths["model_id"]) & table["arch"].isin(paths["arch"])]
        shown = pd.concat([paths, others])
        figures = {"trajectory_epoch": trajectory_figure(shown, "epoch", study.metric_label),
                   "trajectory_accuracy": trajectory_figure(shown, "clean_test_acc", study.metric_label)}
    page = lab_markdown(study, tables, reference)
    if claims is not None and claims.rules.test == "welch":
        page += welch_markdown(tables["lab_claims"], tables["lab_verdicts"], tables["lab_sensitivity"], claims,
                               set(table["variant"]))
    elif claims is not None:
        page += claims_markdown(tables["lab_claims"], tables["lab_verdicts"], claims, set(table["variant"]))
    return tables, figures, page


def with_registration(lab: pd.DataFrame, claims_path: str) -> pd.DataFrame:
    """The lab table with ``started_after_claims`` per model: True where its run started from a checkout that
    held the claims file's first commit, and after that commit's time; False where it started (or finished)
    without it; empty where that is unknown (no start recorded and finished after it, or no git history)."""
    committed = first_commit(claims_path)
    if committed is None or "start_git_commit" not in lab.columns:
        return lab
    sha, when = committed
    repo = Path(claims_path).resolve().parent

    def flag(row) -> bool | None:
        start, started = row.get("start_git_commit"), row.get("started_at")
        if isinstance(start, str) and start:
            after = is_ancestor(sha, start, repo)
            if after is None:
                return None
            return after and (not isinstance(started, str) or pd.Timestamp(started) >= pd.Timestamp(when))
        finish = row.get("finish_git_commit")
        if isinstance(finish, str) and finish and is_ancestor(sha, finish, repo) is False:
            return False  # finished from a checkout without the claims: it ran before them
        return None

    flags = [flag(row) for row in lab.to_dict("records")]
    return lab.assign(started_after_claims=pd.Series(flags, index=lab.index, dtype=object))


def checked_lab(study: Results, lab: pd.DataFrame, reference: str | None = None) -> tuple[pd.DataFrame, str | None]:
    """The lab table joined with the results, and the reference variant (None where there is none to match
    against); one clear error where they do not fit together."""
    table = lab_table(study, lab)
    variants = set(table["variant"])
    if reference is not None and reference not in variants:
        raise ConfigError(f"{{lab_reference}} {reference} is not a variant of the lab table "
                          f"({', '.join(sorted(variants))}): choose one of them", ("lab_reference",))
    return table, reference or (DEFAULT_REFERENCE if DEFAULT_REFERENCE in variants else None)


def lab_markdown(study: Results, tables: dict[str, pd.DataFrame], reference: str | None) -> str:
    what = study.metric_label
    table = tables["lab_models"]
    stages = stage_columns(table)
    models = table[["model_id", "variant", "seed", "epoch", "clean_test_acc", "robust_test_acc", "mean_confidence",
                    "mean_entropy", AVG, *stages]].rename(columns={AVG: f"avg {what}"})
    models = models.astype({"seed": "Int64", "epoch": "Int64"})  # whole numbers, shown without decimals
    spread = spread_markdown_frame(tables["lab_seeds"], stages)
    lines = [f"# Training lab: {what} [%] with accuracy and confidence (reset: {study.reset})", "",
             "Per model: clean / robust top-1 [%], mean max-softmax confidence and entropy (nats) on the measured "
             f"images, the average layer {what} and its mean per stage.", "",
             "## Models", "", markdown_table(models, ".2f"), "",
             "## Seed spread (final models)", "",
             "Per variant over its seeds: mean ± sample std (the mean alone for one seed); min and max are in "
             "lab_seeds.csv.", "",
             markdown_table(spread), ""]
    if "lab_versus" in tables and not tables["lab_versus"].empty:
        lines += [f"## Each variant against `{reference}` (final models)", "",
                  f"Difference of seed means (variant minus `{reference}`, percentage points; confidence as a "
                  "fraction) ± its standard error sqrt(s_v²/n_v + s_r²/n_r); where a side has one seed, the other "
                  "side's between-seed std stands in for its own (`se_from` in lab_versus.csv).", "",
                  markdown_table(versus_markdown_frame(tables["lab_versus"], stages)), ""]
    if "lab_matched" in tables:
        matched = tables["lab_matched"]
        shown = matched[["model_id", "clean_test_acc", "matched_id", "matched_acc", "acc_gap", "like", "avg",
                         "matched_avg", "delta_avg", *[c for c in matched.columns if c.startswith("delta ")
                                                      and c != "delta_avg"]]]
        lines += ["## Accuracy-matched comparison", "",
                  f"Each model against the `{reference}` model (any seed and budget) of nearest clean top-1, like "
                  "with like: a final model against finished runs, a checkpoint against checkpoints (criticality "
                  "jumps over a run's last, low-learning-rate epochs); deltas are model minus match [pp] of the "
                  f"average {what} and of each stage's mean.", "",
                  markdown_table(shown, ".2f"), ""]
    reference_archs = set(table.loc[table["variant"] == reference, "arch"])
    apart = sorted(table.loc[~table["arch"].isin(reference_archs), "model_id"])
    if reference is not None and apart:
        lines += [f"Not compared with `{reference}` (another architecture): {', '.join(apart)}.", ""]
    lines += ["## Mechanism: rank correlations of the average value", "",
              f"Average {what} against clean top-1, mean confidence and mean entropy, within each architecture "
              "of three or more models.", "",
              markdown_table(tables["lab_mechanism"], ".3f"), ""]
    return "\n".join(lines)


def claims_markdown(cells: pd.DataFrame, verdicts: pd.DataFrame, claims: Claims, variants: set[str]) -> str:
    """The claims section of lab.md: the rules, one verdict per claim and variant, every cell."""
    r = claims.rules
    lines = ["## Claims", "",
             f"Judged by rules fixed with the claims: against `{r.reference}` unless a claim names another variant; a "
             f"difference counts where it exceeds max({r.z:g} se, floor) in the claimed direction (floor {r.floor:g} "
             f"points unless a claim sets its own); *no difference* where it stays within that bar while the bar is "
             f"below {r.null_effect:g}; a matched comparison is trusted up to {r.max_gap:g} points of clean top-1. "
             f"Measures: {', '.join(r.measures)}; comparisons: final models (seed means) and accuracy-matched "
             "(each final model minus the reference's finished run of nearest accuracy)."
             + ("" if not r.seeds else " Judged only with these final seeds: "
                + ", ".join(f"`{v}` {n}" for v, n in r.seeds.items()) + "."), "",
             *[f"- **{c.id}** ({c.direction} than `{c.against or r.reference}`, floor "
               f"{r.floor if c.floor is None else c.floor:g}): {c.text}" for c in claims.claims], "",
             markdown_table(verdicts.drop(columns=["text"]).assign(variant=verdicts["variant"].map(
                 lambda v: v if v == ALL_VARIANTS else f"`{v}`"))), "",
             "Every cell: difference [pp] ± se, the bar it had to clear, the judgement.", ""]
    shown = cells.assign(cell=[
        c.judgement if pd.isna(c.delta) else f"{c.delta:+.2f}: {c.judgement}" if pd.isna(c.se)
        else f"{c.delta:+.2f} ± {c.se:.2f} (bar {c.bar:.2f}): {c.judgement}" for c in cells.itertuples()])
    wide = shown.pivot_table(index=["claim", "variant", "against", "comparison"], columns="measure", values="cell",
                             aggfunc="first", sort=False).reset_index()
    lines += [markdown_table(wide[[c for c in ["claim", "variant", "against", "comparison", *r.measures]
                                   if c in wide.columns]]), ""]
    absent = sorted(claims.variants - variants)
    if absent:
        lines += [f"Named by the claims, not in the lab table (yet): {', '.join(f'`{v}`' for v in absent)}.", ""]
    return "\n".join(lines)


def welch_markdown(cells: pd.DataFrame, verdicts: pd.DataFrame, sensitivity_table: pd.DataFrame, claims: Claims,
                   variants: set[str]) -> str:
    """The claims section of lab.md under ``test = "welch"``: rules, primary verdicts with their registration,
    the verdict under every (measure, aggregation), and every cell with its interval."""
    r = claims.rules
    pct = f"{100 * r.confidence:g} %"
    lines = ["## Claims", "",
             f"Judged by rules fixed with the claims ({claims.source}): each cell is a contrast of seed means of final "
             f"models with its {pct} Welch interval (Welch-Satterthwaite degrees of freedom); final = variant minus "
             f"`against` (default `{r.reference}`); matched = variant minus its matched `{r.reference}` variant (the "
             f"budget whose seed-mean clean top-1 is nearest; not matched beyond {r.max_gap:g} points). *counts*: the "
             "interval lies on the claimed side of 0; *counts against*: on the other; *no difference*: it contains "
             f"0 within ±{r.null_effect:g} points; *unclear*: it contains 0 and reaches beyond. A verdict is decided "
             f"by the primary measure (`{r.primary_measure}`) and aggregation (`{r.primary_aggregation}`): holds "
             "where every cell counts, does not hold where one counts against or all show no difference."
             + ("" if not r.seeds else " Seeds required: " + ", ".join(f"`{v}` {n}" for v, n in r.seeds.items())
                + "."), "",
             *[f"- **{c.id}** ({c.direction} than `{c.against or r.reference}`"
               + (f"; {', '.join(c.measures)} only" if c.measures else "")
               + (f"; {', '.join(c.comparisons)} only" if tuple(c.comparisons) != COMPARISONS else "")
               + f"): {c.text}" for c in claims.claims], "",
             "### Verdicts (primary measure and aggregation)", "",
             markdown_table(verdicts.drop(columns=["text"]).assign(variant=verdicts["variant"].map(
                 lambda v: v if v == ALL_VARIANTS else f"`{v}`"))), "",
             "### The same rule under every measure and aggregation", ""]
    grid = sensitivity_table.assign(pair=sensitivity_table["measure"] + " · " + sensitivity_table["aggregation"]
                                    + sensitivity_table["primary"].map({True: " (primary)", False: ""}))
    wide = grid.pivot_table(index=["claim", "variant"], columns="pair", values="verdict", aggfunc="first",
                            sort=False).reset_index()
    lines += [markdown_table(wide), ""]
    shown = cells.assign(cell=[
        c.judgement if pd.isna(c.delta) else f"{c.delta:+.2f} [{c.lo:+.2f}, {c.hi:+.2f}]: {c.judgement}"
        for c in cells.itertuples()])
    for measure in r.measures:
        mine = shown[shown["measure"] == measure]
        if mine.empty:
            continue
        wide = mine.fillna({"matched": ""}).pivot_table(
            index=["claim", "variant", "against", "comparison", "matched"], columns="aggregation", values="cell",
            aggfunc="first", sort=False).reset_index()
        lines += [f"### Cells: {measure} (difference [{pct} interval], percentage points)", "",
                  markdown_table(wide[[c for c in ["claim", "variant", "against", "comparison", "matched",
                                                   *r.aggregations] if c in wide.columns]]), ""]
    absent = sorted(claims.variants - variants)
    if absent:
        lines += [f"Named by the claims, not in the lab table (yet): {', '.join(f'`{v}`' for v in absent)}.", ""]
    return "\n".join(lines)


def _digits(quantity: str) -> int:
    return 3 if quantity in ("mean_confidence", "mean_entropy") else 1


def _per_variant(long: pd.DataFrame, quantities: list[str], seeds, cell) -> pd.DataFrame:
    """A long table (variant, quantity, ...) as one row per variant: ``seeds(row)`` fills the "seeds" column,
    ``cell(row, digits)`` each quantity's column; columns in ``quantities`` order, "–" where a variant has none."""
    cells: dict[str, dict[str, str]] = {}
    for row in long.itertuples(index=False):
        entry = cells.setdefault(row.variant, {"variant": row.variant, "seeds": seeds(row)})
        entry[row.quantity] = cell(row, _digits(row.quantity))
    frame = pd.DataFrame(list(cells.values()))
    return frame[[c for c in ["variant", "seeds", *quantities] if c in frame.columns]].fillna("–")


def spread_markdown_frame(spread: pd.DataFrame, stages: list[str]) -> pd.DataFrame:
    """One row per variant, one "mean ± std" column per quantity (3 decimals for confidence and entropy), in
    network order whichever variant came first."""
    return _per_variant(spread, [*SPREAD_QUANTITIES, *stages], lambda r: r.seeds,
                        lambda r, d: f"{r.mean:.{d}f}" if pd.isna(r.std) else f"{r.mean:.{d}f} ± {r.std:.{d}f}")


def versus_markdown_frame(versus: pd.DataFrame, stages: list[str]) -> pd.DataFrame:
    """One row per variant, one "delta ± se" column per quantity."""
    return _per_variant(versus, ["clean_test_acc", "robust_test_acc", "mean_confidence", AVG, *stages],
                        lambda r: f"{r.n} vs {r.reference_n}",
                        lambda r, d: f"{r.delta:+.{d}f}" + ("" if pd.isna(r.se) else f" ± {r.se:.{d}f}"))


def write_lab(study: Results, lab: pd.DataFrame, folder: Path, reference: str | None, dpi: int,
              claims: Claims | None = None, claim_results: tuple[Results, ...] = ()) -> list[str]:
    """Every lab file into ``folder``; returns their names."""
    tables, figures, page = lab_outputs(study, lab, reference, claims, claim_results)
    names = []
    for stem, frame in tables.items():
        frame.to_csv(folder / f"{stem}.csv", index=False)
        names.append(f"{stem}.csv")
    for stem, fig in figures.items():
        names += save_figure(fig, folder, stem, dpi)
    (folder / "lab.md").write_text(page, encoding="utf-8")
    return names + ["lab.md"]
