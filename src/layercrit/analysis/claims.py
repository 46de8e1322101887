"""Claims stated before their numbers exist, judged by rules fixed with them: a training lab's verdicts
(``layercrit report --lab accuracies.csv --claims claims.toml``).

A claims file (TOML) holds the rules and the claims::

    [rules]
    reference = "standard"     # the variant claims compare against unless they name another (`against`)
    z = 2.0                    # a difference counts where it exceeds z standard errors...
    floor = 3.9                # ...and this many points (run-to-run spread); a claim may set its own
    null_effect = 5.0          # "no difference" needs z se below this: an effect this large would have shown
    max_gap = 3.0              # an accuracy-matched comparison is trusted up to this clean top-1 gap [pp]
    measures = ["criticality", "disagreement"]
    seeds = { "standard" = 2 }  # optional: a variant is judged only once it has this many final seeds

    [[claims]]
    id = "1a"
    text = "adversarial training raises average criticality"
    variants = ["pgd-linf eps=8/255 steps=2", "pgd-l2 eps=0.5 steps=1"]
    quantity = ["avg"]         # lab-table columns (avg, stem, stage 1, ..., head), averaged
    minus = []                 # optional: a contrast, quantity minus the mean of these columns
    direction = "higher"       # or "lower": the variant than `against`

Each (claim, variant) is judged under each measure in two comparisons. ``final``: the seed mean of the
variant's final models minus that of `against`'s, with se sqrt(s_v²/n_v + s_a²/n_a) (a side with one seed
borrows the reference's between-seed std, else the other side's), as in ``lab_versus.csv``. ``matched``:
each final model minus the reference's finished run of nearest clean top-1 (:func:`accuracy_matched`),
averaged over seeds (against another variant: the difference of the two variants' averages); its se adds
the matched models' own spread (s_ref²/k for k distinct matches per side) and is conservative where
both sides share a match.

A cell *counts* where the difference exceeds max(z·se, floor) in the claimed direction and *counts
against* where it does so the other way; it shows *no difference* where it stays within that bar while
z·se < null_effect, and is *unclear* otherwise (the noise is too large to tell). It is *not matched* where a
match is further than max_gap in clean top-1 or of another kind (no finished run of the reference), and
*missing* where the lab lacks the models or the measure. A (claim, variant) *holds* where every cell
counts, *does not hold* where every cell counts against or shows no difference, is *pending* while a cell
is missing, and *inconclusive* otherwise, with the cells that disagree named; a claim over several variants
holds (does not hold) where it holds (does not hold) for each.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .. import validate
from ..errors import ConfigError, LayercritError
from .lab import AGGREGATIONS, AVG, accuracy_matched, aggregated, budget_family, seed_std, stage_columns, \
    standard_error
from .layers import HEAD, OTHER, STEM
from .sources import METRICS
from .stats import welch_contrast

DIRECTIONS = ("higher", "lower")
COMPARISONS = ("final", "matched")
QUANTITY = re.compile(rf"^({AVG}|{STEM}|{HEAD}|{OTHER}|stage \d+)$")  # the lab table's value columns
COUNTS, AGAINST, NONE, UNCLEAR, NOT_MATCHED, MISSING = ("counts", "counts against", "no difference", "unclear",
                                                        "not matched", "missing")
HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, PENDING = "holds", "does not hold", "inconclusive", "pending"
CELL_COLUMNS = ["claim", "variant", "against", "measure", "comparison", "n", "against_n", "delta", "se", "bar",
                "max_acc_gap", "judgement"]
VERDICT_COLUMNS = ["claim", "text", "variant", "verdict", "why"]
ALL_VARIANTS = "(all)"


@dataclass(frozen=True)
class Rules:
    reference: str = "standard"
    z: float = 2.0
    floor: float = 0.0
    null_effect: float = 5.0
    max_gap: float = 3.0
    measures: tuple[str, ...] = ("criticality", "disagreement")  # "calibrated" only where a file names it
    seeds: Mapping[str, int] = field(default_factory=dict)  # variant -> final seeds it needs before it is judged
    # test = "welch": 95 % Welch intervals over seeds, judged under every (measure, aggregation), decided by the
    # primary pair (see judge_welch); test = "z": the z-se bar and floor above, on the lab table's stage columns
    test: str = "z"
    confidence: float = 0.95
    aggregations: tuple[str, ...] = ("stages",)
    primary_measure: str = ""  # default: the first of measures
    primary_aggregation: str = ""  # default: the first of aggregations


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    variants: tuple[str, ...]
    quantity: tuple[str, ...]
    direction: str = "higher"
    minus: tuple[str, ...] = ()
    against: str | None = None
    floor: float | None = None  # None: the rules' floor
    measures: tuple[str, ...] = ()  # only these of the rules' measures (the first decides); () all of them
    comparisons: tuple[str, ...] = COMPARISONS


@dataclass(frozen=True)
class Claims:
    rules: Rules = field(default_factory=Rules)
    claims: tuple[Claim, ...] = ()
    source: str = "claims"  # where they come from, for errors

    @property
    def variants(self) -> set[str]:
        """Every variant a claim names (compared or compared against), the reference included."""
        named = {self.rules.reference}
        for claim in self.claims:
            named |= set(claim.variants) | ({claim.against} if claim.against else set())
        return named


RULE_KEYS = {"reference", "z", "floor", "null_effect", "max_gap", "measures", "seeds", "test", "confidence",
             "aggregations", "primary_measure", "primary_aggregation"}
CLAIM_KEYS = {"id", "text", "variants", "quantity", "minus", "direction", "against", "floor", "measures",
              "comparisons"}
TESTS = ("z", "welch")
WELCH_ONLY = ("confidence", "aggregations", "primary_measure", "primary_aggregation")


# read_claims' messages name the file as the report's parameter (write_report's claims; the CLI's flag); its own
# callers read their parameter: path
_AS_PATH = {"claims": "path"}


def read_claims(path: str | Path) -> Claims:
    """Parse and check a claims file (see the module's docstring); one clear error naming the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"claims file not found: {path}: check {{claims}}", ("claims",), python=_AS_PATH)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise LayercritError(f"{path} is not valid TOML ({e}): fix the file") from None
    except UnicodeDecodeError:
        raise LayercritError(f"{path} is not a text file: give a .toml claims file") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path} ({e.strerror or e}): check {{claims}}", ("claims",),
                          python=_AS_PATH) from None
    return claims_from_dict(raw, str(path))


def claims_from_dict(raw: Mapping[str, Any], where: str = "claims") -> Claims:
    """The same checks for a parsed mapping ({"rules": {...}, "claims": [{...}, ...]})."""
    unknown = sorted(set(raw) - {"rules", "claims"})
    if unknown:
        raise LayercritError(f"{where}: unknown section(s) {', '.join(unknown)}: use [rules] and [[claims]]")
    rules_raw = raw.get("rules", {})
    if not isinstance(rules_raw, dict):
        raise LayercritError(f"{where}: 'rules' must be a table [rules]")
    _no_unknown(rules_raw, RULE_KEYS, f"{where}: [rules]")
    r = f"{where}: [rules]"
    measures = tuple(_texts(rules_raw.get("measures", list(Rules.measures)), f"{r} measures", unique=True))
    for measure in measures:
        validate.choice(measure, f"{r} measures", tuple(METRICS))
    test = validate.choice(rules_raw.get("test", "z"), f"{r} test", TESTS)
    wrong = [k for k in (("z", "floor") if test == "welch" else WELCH_ONLY) if k in rules_raw]
    if wrong:
        raise LayercritError(f"{r} {', '.join(wrong)} do(es) not apply to test = \"{test}\": take it out, or "
                             f"use test = \"{'z' if test == 'welch' else 'welch'}\"")
    aggregations = tuple(_texts(rules_raw.get("aggregations", ["stages"]), f"{r} aggregations", unique=True))
    for aggregation in aggregations:
        validate.choice(aggregation, f"{r} aggregations", AGGREGATIONS)
    primary_measure = validate.choice(rules_raw.get("primary_measure", measures[0]), f"{r} primary_measure",
                                      measures)
    primary_aggregation = validate.choice(rules_raw.get("primary_aggregation", aggregations[0]),
                                          f"{r} primary_aggregation", aggregations)
    rules = Rules(reference=validate.text(rules_raw.get("reference", "standard"), f"{r} reference"),
                  z=validate.number(rules_raw.get("z", 2.0), f"{r} z", positive=True),
                  floor=validate.number(rules_raw.get("floor", 0.0), f"{r} floor", low=0.0, high=100.0),
                  null_effect=validate.number(rules_raw.get("null_effect", 5.0), f"{r} null_effect", positive=True),
                  max_gap=validate.number(rules_raw.get("max_gap", 3.0), f"{r} max_gap", low=0.0, high=100.0),
                  measures=measures, seeds=_seeds(rules_raw.get("seeds", {}), f"{r} seeds"), test=test,
                  confidence=validate.number(rules_raw.get("confidence", 0.95), f"{r} confidence", low=0.5,
                                             high=0.999),
                  aggregations=aggregations, primary_measure=primary_measure,
                  primary_aggregation=primary_aggregation)
    if rules.floor >= rules.null_effect:
        raise LayercritError(f"{r} floor {rules.floor:g} is not below null_effect {rules.null_effect:g}: no "
                             "difference could then ever be told from none; lower the floor or raise null_effect")
    items = raw.get("claims")
    if not isinstance(items, list) or not items or not all(isinstance(c, dict) for c in items):
        raise LayercritError(f"{where}: needs at least one [[claims]] table (id, text, variants, quantity)")
    claims, seen = [], set()
    for i, item in enumerate(items, 1):
        c = f"{where}: claim {item.get('id', i)!s}"
        _no_unknown(item, CLAIM_KEYS, c)
        for key in ("id", "text", "variants", "quantity"):
            if key not in item:
                raise LayercritError(f"{c} has no {key}: give it")
        claim_id = validate.text(item["id"], f"{c} id")
        if claim_id in seen:
            raise LayercritError(f"{where}: claim id {claim_id} appears twice: give each claim its own id")
        seen.add(claim_id)
        floor = item.get("floor")
        variants = _texts(item["variants"], f"{c} variants", unique=True)
        against = validate.optional_text(item.get("against"), f"{c} against")
        if (against or rules.reference) in variants:
            raise LayercritError(f"{c} compares {against or rules.reference} with itself: take it out of variants, "
                                 "or set against")
        quantity, minus = (_texts(item.get(k, []), f"{c} {k}", unique=True, allow_empty=k == "minus")
                           for k in ("quantity", "minus"))
        for column in (*quantity, *minus):
            if not QUANTITY.match(column):
                raise LayercritError(f"{c} quantity '{column}': use avg, stem, stage 1, stage 2, ..., head "
                                     "(the lab table's columns)")
        claims.append(Claim(
            id=claim_id, text=validate.text(item["text"], f"{c} text"), variants=tuple(variants),
            quantity=tuple(quantity), minus=tuple(minus),
            direction=validate.choice(item.get("direction", "higher"), f"{c} direction", DIRECTIONS),
            against=against,
            floor=None if floor is None else validate.number(floor, f"{c} floor", low=0.0, high=100.0),
            measures=tuple(_subset(item.get("measures"), rules.measures, f"{c} measures")),
            comparisons=tuple(_subset(item.get("comparisons"), COMPARISONS, f"{c} comparisons")) or COMPARISONS))
        if floor is not None and rules.test == "welch":
            raise LayercritError(f"{c} floor does not apply to test = \"welch\" (its intervals carry the seed "
                                 "spread): take it out")
        if claims[-1].floor is not None and claims[-1].floor >= rules.null_effect:
            raise LayercritError(f"{c} floor {claims[-1].floor:g} is not below [rules] null_effect "
                                 f"{rules.null_effect:g}: no difference could then ever be told from none")
    return Claims(rules, tuple(claims), where)


def _subset(value, allowed: tuple[str, ...], name: str) -> list[str]:
    """A claim's own choice among the rules' measures or the comparisons (none given: [])."""
    if value is None:
        return []
    chosen = _texts(value, name, unique=True)
    for v in chosen:
        validate.choice(v, name, allowed)
    return chosen


def _seeds(value, name: str) -> dict[str, int]:
    if not isinstance(value, dict):
        raise LayercritError(f"{name} {value!r}: must be a table of variant = number of seeds, e.g. "
                             "seeds = { \"standard\" = 2 }")
    return {validate.text(k, name): validate.integer(v, f"{name} {k}", low=1, high=1000) for k, v in value.items()}


def _no_unknown(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise LayercritError(f"{where}: unknown key(s) {', '.join(unknown)}: use any of {', '.join(sorted(allowed))}")


def _texts(value, name: str, allow_empty: bool = False, unique: bool = False) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or (not values and not allow_empty):
        raise LayercritError(f"{name} {value!r}: must be a text or a list of texts")
    texts = [validate.text(v, name) for v in values]
    if unique and len(set(texts)) < len(texts):
        raise LayercritError(f"{name} names {next(t for t in texts if texts.count(t) > 1)} twice: name each once")
    return texts


def judge_claims(tables: Mapping[str, pd.DataFrame], claims: Claims,
                 layers: Mapping[str, pd.DataFrame] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cells, verdicts) for lab tables by measure (``{"criticality": lab_table(...), "disagreement": ...}``,
    each from :func:`~layercrit.analysis.lab.lab_table`): one cell per claim, variant, measure and comparison
    (``CELL_COLUMNS``), one verdict per claim and variant plus one per claim over all its variants
    (variant "(all)"; ``VERDICT_COLUMNS``). A measure the rules ask for and ``tables`` lacks leaves its cells
    missing, as do variants the tables do not hold (yet). A variant that cannot be compared with the reference
    at all (another architecture, or the reference with another budget) is one error naming the claim.

    With ``test = "welch"`` the cells are those of :func:`judge_welch`, which also needs ``layers``: each measure's
    per-(model, layer) values (:attr:`Results.layer_stats`) for the pooled and core aggregations. Where the lab
    tables have a ``started_after_claims`` column (True / False / NaN per model: did its run start after the
    claims file was committed?), each verdict says whether the claim was fixed before every run it judges."""
    rules = claims.rules
    for table in tables.values():
        _check_comparable(table, claims)
    if rules.test == "welch":
        return judge_welch(tables, layers or {}, claims)
    cells = []
    for claim in claims.claims:
        for measure in rules.measures:
            table = tables.get(measure)
            for variant in claim.variants:
                for comparison in COMPARISONS:
                    cell = _cell(table, claim, variant, comparison, rules, claims.source) if table is not None else {}
                    cells.append({"claim": claim.id, "variant": variant, "against": claim.against or rules.reference,
                                  "measure": measure, "comparison": comparison,
                                  **{k: np.nan for k in CELL_COLUMNS[5:]}, "judgement": MISSING, **cell})
    cell_frame = pd.DataFrame(cells, columns=CELL_COLUMNS)
    return cell_frame, _verdicts(cell_frame, claims)


def _check_comparable(table: pd.DataFrame, claims: Claims) -> None:
    reference = claims.rules.reference
    arch = set(table.loc[table["variant"] == reference, "arch"])
    family = set(table.loc[budget_family(table, reference), "variant"]) - {reference}
    for claim in claims.claims:
        for variant in (*claim.variants, *([claim.against] if claim.against else [])):
            rows = table[table["variant"] == variant]
            where = f"{claims.source}: claim {claim.id}"
            if arch and not rows.empty and not rows["arch"].isin(arch).any():
                raise LayercritError(f"{where}: {variant} is another architecture than {reference} "
                                     f"({', '.join(sorted(set(rows['arch'])))}): its stages are not comparable; "
                                     "take it out of the claim")
            if variant in family:
                raise LayercritError(f"{where}: {variant} is {reference} with another budget (a control the "
                                     "matched comparison matches against): compare methods, not budgets")


def claim_values(table: pd.DataFrame, claim: Claim, source: str = "claims") -> pd.Series:
    """Per model of a lab table: the claim's quantity (the mean of its columns, minus the mean of ``minus``)."""
    known = [AVG, *stage_columns(table)]
    for column in (*claim.quantity, *claim.minus):
        if column not in known:
            raise LayercritError(f"{source}: claim {claim.id}: quantity '{column}' is not a column of the lab table: "
                                 f"use {', '.join(known)}")
    values = table[list(claim.quantity)].mean(axis=1)
    if claim.minus:
        values = values - table[list(claim.minus)].mean(axis=1)
    return pd.Series(values.to_numpy(), index=table["model_id"].to_numpy())


def _cell(table: pd.DataFrame, claim: Claim, variant: str, comparison: str, rules: Rules, source: str) -> dict:
    values = claim_values(table, claim, source)
    against = claim.against or rules.reference
    finals = table[table["final"]]
    reference = finals[finals["variant"] == rules.reference]
    arch = set(reference["arch"])
    sides = [finals[(finals["variant"] == v) & finals["arch"].isin(arch)] for v in (variant, against)]
    side_values = [values[side["model_id"]].dropna() for side in sides]
    if reference.empty or any(v.empty for v in side_values):
        return {}
    needed = {v: rules.seeds.get(v, 1) for v in {variant, against, rules.reference}}
    have = {variant: len(side_values[0]), against: len(side_values[1]),
            rules.reference: int(values[reference["model_id"]].notna().sum())}
    if any(have[v] < needed[v] for v in needed):  # judged only once every side has the seeds the rules ask for
        return {"n": have[variant], "against_n": have[against], "judgement": MISSING}
    ref_std = seed_std(values[reference["model_id"]])
    stand_in = ref_std if not np.isnan(ref_std) else next(
        (s for s in map(seed_std, side_values) if not np.isnan(s)), np.nan)
    gap, trusted = np.nan, True
    n = [len(v) for v in side_values]
    if comparison == "final":
        delta = side_values[0].mean() - side_values[1].mean()
        se = standard_error([(seed_std(v), len(v)) for v in side_values], stand_in)
    else:
        # each side's models minus their matches (the reference's own side is its own match: 0)
        matched = accuracy_matched(table, rules.reference).set_index("model_id")
        compared = [(i, side_v) for i, (side_v, v) in enumerate(zip(side_values, (variant, against)))
                    if v != rules.reference]
        rows = []
        for i, side_v in compared:
            r = matched.loc[[m for m in side_v.index if m in matched.index]]
            r = r.assign(d=values[r.index].to_numpy() - values[r["matched_id"]].to_numpy()).dropna(subset=["d"])
            if r.empty:
                return {}
            rows.append(r)
            n[i] = len(r)
        means = [float(r["d"].mean()) for r in rows]
        delta = means[0] - means[1] if len(means) > 1 else means[0] if variant != rules.reference else -means[0]
        terms: list[tuple[float, float]] = [(seed_std(values[r.index]), len(r)) for r in rows]
        # the matches' own run-to-run noise: s_ref² · Σ w_j², w_j the share of the side's models matched to j
        terms += [(ref_std, 1.0 / float(((r["matched_id"].value_counts() / len(r)) ** 2).sum())) for r in rows]
        se = standard_error(terms, stand_in)
        gap = float(pd.concat([r["acc_gap"].abs() for r in rows]).max())
        trusted = bool(gap <= rules.max_gap and all(r["like"].all() for r in rows))
    floor = rules.floor if claim.floor is None else claim.floor
    bar = max(rules.z * se, floor) if not np.isnan(se) else np.nan
    return {"n": n[0], "against_n": n[1], "delta": float(delta), "se": se, "bar": bar, "max_acc_gap": gap,
            "judgement": _judge(float(delta), bar, claim.direction, rules) if trusted else NOT_MATCHED}


def _judge(delta: float, bar: float, direction: str, rules: Rules) -> str:
    if np.isnan(bar) or np.isnan(delta):
        return UNCLEAR
    signed = delta if direction == "higher" else -delta
    if signed > bar:
        return COUNTS
    if signed < -bar:
        return AGAINST
    return NONE if bar < rules.null_effect else UNCLEAR  # an effect of null_effect would have counted


def _verdicts(cells: pd.DataFrame, claims: Claims) -> pd.DataFrame:
    rows = []
    for claim in claims.claims:
        per_variant = []
        for variant in claim.variants:
            mine = cells[(cells["claim"] == claim.id) & (cells["variant"] == variant)]
            verdict, why = _verdict(mine)
            per_variant.append(verdict)
            rows.append({"claim": claim.id, "text": claim.text, "variant": variant, "verdict": verdict, "why": why})
        if len(claim.variants) > 1:
            rows.append({"claim": claim.id, "text": claim.text, "variant": ALL_VARIANTS,
                         **dict(zip(("verdict", "why"), _overall(claim.variants, per_variant)))})
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def _verdict(cells: pd.DataFrame) -> tuple[str, str]:
    judgements = list(cells["judgement"])
    labels = [f"{m} {c}" for m, c in zip(cells["measure"], cells["comparison"])]
    if MISSING in judgements:
        return PENDING, "models, seeds or measure missing: " + ", ".join(
            lab for lab, j in zip(labels, judgements) if j == MISSING)
    if all(j == COUNTS for j in judgements):
        return HOLDS, "counts in every measure and comparison"
    if all(j in (AGAINST, NONE) for j in judgements):
        return DOES_NOT_HOLD, _grouped(labels, judgements)
    return INCONCLUSIVE, _grouped(labels, judgements)


def _grouped(labels: list[str], judgements: list[str]) -> str:
    """'counts: criticality final, ...; no difference: ...' in the order the judgements first appear."""
    parts: dict[str, list[str]] = {}
    for label, judgement in zip(labels, judgements):
        parts.setdefault(judgement, []).append(label)
    return "; ".join(f"{j}: {', '.join(ls)}" for j, ls in parts.items())


def _overall(variants: tuple[str, ...], verdicts: list[str]) -> tuple[str, str]:
    why = "; ".join(f"{v}: {verdict}" for v, verdict in zip(variants, verdicts))
    for verdict in (HOLDS, DOES_NOT_HOLD):
        if all(v == verdict for v in verdicts):
            return verdict, why
    return (PENDING if PENDING in verdicts else INCONCLUSIVE), why


# ---- test = "welch" ---------------------------------------------------------------------------------------------
WELCH_CELL_COLUMNS = ["claim", "variant", "against", "measure", "aggregation", "comparison", "primary", "n",
                      "against_n", "matched", "delta", "se", "df", "lo", "hi", "max_acc_gap", "judgement", "models"]
WELCH_VERDICT_COLUMNS = ["claim", "text", "variant", "verdict", "why", "registration"]
SENSITIVITY_COLUMNS = ["claim", "variant", "measure", "aggregation", "primary", "verdict"]
PRE_REGISTERED = "pre-registered"


def judge_welch(tables: Mapping[str, pd.DataFrame], layers: Mapping[str, pd.DataFrame],
                claims: Claims) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cells, verdicts) under ``test = "welch"``: a cell per claim, variant, measure, aggregation and comparison
    (``WELCH_CELL_COLUMNS``), its difference a contrast of seed means with a Welch interval
    (:func:`~layercrit.analysis.stats.welch_contrast`): final = variant minus against; matched = variant minus its
    matched reference variant (the reference at the budget whose seed-mean clean top-1 is nearest), minus the same
    for ``against`` where it is not the reference. Judged on the interval: *counts* (beyond 0 on the claimed side),
    *counts against*, *no difference* (contains 0, within +-null_effect), *unclear*; *not matched* beyond max_gap;
    *missing* while a group lacks the seeds the rules ask (at least 2). The verdicts (``WELCH_VERDICT_COLUMNS``)
    come from the primary measure and aggregation; :func:`sensitivity` gives them under every pair."""
    rules = claims.rules
    rows = []
    for claim in claims.claims:
        measures = claim.measures or rules.measures
        for measure in measures:
            table = tables.get(measure)
            layer_stats = layers.get(measure)
            for aggregation in rules.aggregations:
                values = None
                if table is not None and layer_stats is not None:
                    values = _claim_aggregate(layer_stats, claim, aggregation)
                for variant in claim.variants:
                    for comparison in claim.comparisons:
                        cell = _welch_cell(table, values, claim, variant, comparison, rules) if values is not None \
                            else {"judgement": MISSING}
                        primary = measure == (claim.measures[0] if claim.measures else rules.primary_measure) and \
                            aggregation == rules.primary_aggregation
                        rows.append({"claim": claim.id, "variant": variant, "against": claim.against or rules.reference,
                                     "measure": measure, "aggregation": aggregation, "comparison": comparison,
                                     "primary": primary, **cell})
    cells = pd.DataFrame(rows, columns=WELCH_CELL_COLUMNS)
    started = _started_after(tables)
    out = []
    for claim in claims.claims:
        registration = _registration(cells[cells["claim"] == claim.id], started)
        per_variant = []
        for variant in claim.variants:
            mine = cells[(cells["claim"] == claim.id) & (cells["variant"] == variant) & cells["primary"]]
            verdict, why = _welch_verdict(mine)
            per_variant.append(verdict)
            out.append({"claim": claim.id, "text": claim.text, "variant": variant, "verdict": verdict, "why": why,
                        "registration": registration})
        if len(claim.variants) > 1:
            out.append({"claim": claim.id, "text": claim.text, "variant": ALL_VARIANTS,
                        **dict(zip(("verdict", "why"), _overall(claim.variants, per_variant))),
                        "registration": registration})
    return cells, pd.DataFrame(out, columns=WELCH_VERDICT_COLUMNS)


def sensitivity(cells: pd.DataFrame) -> pd.DataFrame:
    """The verdict of each (claim, variant) under every (measure, aggregation) of its cells, by the same rule as
    the primary one (``SENSITIVITY_COLUMNS``)."""
    rows = []
    for (claim, variant, measure, aggregation), group in cells.groupby(
            ["claim", "variant", "measure", "aggregation"], sort=False):
        rows.append({"claim": claim, "variant": variant, "measure": measure, "aggregation": aggregation,
                     "primary": bool(group["primary"].all()), "verdict": _welch_verdict(group)[0]})
    return pd.DataFrame(rows, columns=SENSITIVITY_COLUMNS)


def _claim_aggregate(layer_stats: pd.DataFrame, claim: Claim, aggregation: str) -> pd.Series:
    stages = set(layer_stats["stage"].unique())
    absent = [s for s in (*claim.quantity, *claim.minus) if s != AVG and s not in stages]
    if absent:  # else every cell would stay missing and the claim pending for good
        raise LayercritError(f"claim {claim.id}: {', '.join(absent)} is no stage of the measured models (they have "
                             f"{', '.join(sorted(stages))}): fix its quantity or minus")
    values = aggregated(layer_stats, claim.quantity, aggregation)
    if claim.minus:
        values = values - aggregated(layer_stats, claim.minus, aggregation)
    return values


def _welch_cell(table: pd.DataFrame | None, values: pd.Series, claim: Claim, variant: str, comparison: str,
                rules: Rules) -> dict:
    if table is None:
        return {"judgement": MISSING}
    finals = table[table["final"]]
    against = claim.against or rules.reference

    def seeds(v: str) -> pd.Series:
        ids = finals.loc[finals["variant"] == v, "model_id"]
        return values.reindex(ids).dropna()

    groups: list[tuple[float, str]] = [(1.0, variant), (-1.0, against)]
    matched, gap = "", np.nan
    if comparison == "matched":
        groups = [(1.0, variant)]
        pairs = [(variant, 1.0)] + ([(against, -1.0)] if against != rules.reference else [])
        names, gaps = [], []
        for side, sign in pairs:
            if side != variant:
                groups.append((sign, side))
            match, side_gap = _matched_variant(finals, side, rules.reference)
            if match is None:
                return {"judgement": MISSING}
            groups.append((-sign, match))
            names.append(match)
            gaps.append(abs(side_gap))
        matched, gap = " / ".join(names), max(gaps)
    merged: dict[str, float] = {}
    for c, v in groups:  # a control matched on both sides of a contrast cancels out
        merged[v] = merged.get(v, 0.0) + c
    groups = [(c, v) for v, c in merged.items() if c != 0.0]
    samples = [(c, seeds(v)) for c, v in groups]
    models = ",".join(m for _, s in samples for m in s.index)
    base = {"n": len(samples[0][1]), "against_n": len(seeds(against)), "matched": matched, "max_acc_gap": gap,
            "models": models}
    if any(len(s) < max(2, rules.seeds.get(v, 2)) for (_, s), (_, v) in zip(samples, groups)):
        return {**base, "judgement": MISSING}
    result = welch_contrast([(c, s.to_numpy()) for c, s in samples], rules.confidence)
    if comparison == "matched" and gap > rules.max_gap:
        return {**base, **result, "judgement": NOT_MATCHED}
    return {**base, **result, "judgement": _judge_interval(result["lo"], result["hi"], claim.direction, rules)}


def _matched_variant(finals: pd.DataFrame, variant: str, reference: str) -> tuple[str | None, float]:
    """The reference variant, at any budget, whose seed-mean clean top-1 is nearest to ``variant``'s; the gap."""
    accuracy = finals.groupby("variant")["clean_test_acc"].mean()
    family = finals.loc[budget_family(finals, reference), "variant"].unique()
    if variant not in accuracy or not len(family):
        return None, np.nan
    gaps = (accuracy.reindex(family) - accuracy[variant]).abs().dropna()
    if gaps.empty:
        return None, np.nan
    match = str(gaps.idxmin())
    return match, float(accuracy[variant] - accuracy[match])


def _judge_interval(lo: float, hi: float, direction: str, rules: Rules) -> str:
    if np.isnan(lo) or np.isnan(hi):
        return UNCLEAR
    low, high = (lo, hi) if direction == "higher" else (-hi, -lo)
    if low > 0:
        return COUNTS
    if high < 0:
        return AGAINST
    return NONE if -rules.null_effect < low and high < rules.null_effect else UNCLEAR


def _welch_verdict(cells: pd.DataFrame) -> tuple[str, str]:
    """Holds where every cell counts; does not hold where one counts against or all show no difference;
    pending while one is missing; inconclusive otherwise."""
    judgements = list(cells["judgement"])
    labels = list(cells["comparison"])
    if not judgements or MISSING in judgements:
        return PENDING, "seeds or measure missing: " + ", ".join(
            lab for lab, j in zip(labels, judgements) if j == MISSING)
    why = _grouped(labels, judgements)
    if all(j == COUNTS for j in judgements):
        return HOLDS, why
    if AGAINST in judgements or all(j == NONE for j in judgements):
        return DOES_NOT_HOLD, why
    return INCONCLUSIVE, why


def _started_after(tables: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    """model id -> did its run start after the claims file was committed (True / False / NaN unknown)."""
    out: dict[str, Any] = {}
    for table in tables.values():
        if "started_after_claims" in table.columns:
            out.update((m, None if pd.isna(f) else bool(f))
                       for m, f in zip(table["model_id"], table["started_after_claims"]))
    return out


def _registration(cells: pd.DataFrame, started: Mapping[str, Any]) -> str:
    """"pre-registered" where the claims file was committed before every run the claim's cells judge; else how
    many of them started before it (or are of unknown start); "" where the lab table does not say."""
    if not started:
        return ""
    models = sorted({m for ms in cells["models"].dropna() for m in str(ms).split(",") if m})
    if not models:
        return ""
    flags = [started.get(m) for m in models]
    before, unknown = flags.count(False), flags.count(None)
    if before:
        return f"after the data: {before} of {len(models)} runs started before the claims file"
    if unknown:
        return f"unknown: {unknown} of {len(models)} runs do not record when they started"
    return PRE_REGISTERED
