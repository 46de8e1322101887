"""report: the study's figures, statistics and interactive page from databases and/or the study's CSV."""
from __future__ import annotations

import argparse
from pathlib import Path
import re
import sys
import warnings

REPORT_EPILOG = """\
writes into --out:
  heatmap.png/.pdf   models (grouped by category, baseline first) x layers, criticality 0-100 %
  delta.png/.pdf     the same minus the baseline; std.png/.pdf: std over trials
  accuracy_vs_criticality.png/.pdf, epsilon.png/.pdf, stages.csv/.md, summary.json
  index.html         a self-contained interactive page (opens from disk, no network)
metadata (--metadata FILE.csv): columns model_id, category, accuracy, epsilon, norm, display_name;
  it wins over a database's own category / measured top-1, which win over the zoo registry.
example:
  layercrit report --db study.db --paper-csv raw_results.csv --baseline tv_resnet50 --out report/
"""

# The Python parameters (load_results, write_report, read_lab_csv, ...) whose flag here is not "--" + the name;
# the others (reset, unit, metric, baseline, metadata, only, lab, lab_reference, claims, out) are.
REPORT_FLAGS = {"dbs": "--db", "paper_csvs": "--paper-csv", "name": "layercrit measure --name"}


def register(sub) -> None:
    r = sub.add_parser("report", help="figures, statistics and an interactive page from results",
                       epilog=REPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--db", nargs="+", action="extend", default=[], metavar="STUDY.db",
                   help="results database(s) of layercrit measure (repeatable)")
    r.add_argument("--paper-csv", nargs="+", action="extend", default=[], metavar="FILE",
                   help="raw-results CSV(s) in the original study's layout (repeatable)")
    r.add_argument("--baseline", metavar="MODEL_ID",
                   help="model the delta figure compares with (default: the one model of category 'baseline')")
    r.add_argument("--metadata", metavar="FILE.csv", help="model categories, accuracies, epsilons (see below)")
    r.add_argument("--reset", default="random", help="which reset kind's rows of the databases (default random)")
    r.add_argument("--metric", default="criticality", choices=["criticality", "disagreement", "calibrated"],
                   help="criticality: 100 x (1 - cosine of the softmax vectors), the study's measure (default); "
                        "disagreement: 100 - top-1 agreement, the %% of images whose class a reset changes "
                        "(does not depend on how confident the model is); calibrated: the criticality of "
                        "databases measured with --temperature (given with --calibrated-db)")
    r.add_argument("--calibrated-db", nargs="+", action="extend", default=[], metavar="STUDY.db",
                   help="database(s) of the same models measured with --temperature calibrate: the 'calibrated' "
                        "measure (--metric calibrated, or a claims file's measures)")
    r.add_argument("--unit", default="layer", choices=["layer", "block"],
                   help="layer rows (default) or residual-block rows (layercrit measure --unit block)")
    r.add_argument("--without", nargs="+", default=["adversarial training"], metavar="CATEGORY",
                   help="also correlate without each of these categories (default: 'adversarial training')")
    r.add_argument("--only", nargs="+", default=[], metavar="PATTERN",
                   help="report only the models whose ids match these globs ('!glob' leaves models out, "
                        "e.g. --only '!*-e??' without trajectory checkpoints)")
    r.add_argument("--lab", metavar="ACCURACIES.csv",
                   help="a training lab's table (layercrit study accuracies): adds lab.md, lab_*.csv (seed spread, "
                        "accuracy-matched comparison, confidence correlations) and trajectory figures")
    r.add_argument("--lab-reference", metavar="VARIANT",
                   help="with --lab: the variant others are matched against by accuracy (default: standard)")
    r.add_argument("--claims", metavar="CLAIMS.toml",
                   help="with --lab: claims and the rules that judge them, fixed in advance (see docs/report.md); "
                        "adds lab_claims.csv, lab_verdicts.csv and a Claims section to lab.md")
    r.add_argument("--out", required=True, metavar="DIR", help="output folder (created; files in it replaced)")
    r.set_defaults(func=run_report, flags=REPORT_FLAGS)


def _with_flags(message) -> str:
    """A warning or note of the results (an ``analysis.Note``, or a plain text) with this command's flags."""
    from ..errors import Message
    from . import flag

    if not isinstance(message, Message):
        return str(message)
    fields = getattr(message, "fields", None) or re.findall(r"\{([a-z_][a-z0-9_]*)\}", message.template)
    return message.naming({f: flag(f, REPORT_FLAGS) for f in fields})


def run_report(args) -> int:
    from ..analysis import ReportWarning, load_results, read_claims, read_lab_csv  # lazy: pandas, matplotlib here
    from ..errors import LayercritError
    from ..report import write_report
    from ..report.lab import checked_lab

    for option in ("lab_reference", "claims"):
        if getattr(args, option) and not args.lab:
            raise LayercritError(f"--{option.replace('_', '-')} applies to a lab table: add --lab ACCURACIES.csv")
    lab = read_lab_csv(args.lab) if args.lab else None
    claims = read_claims(args.claims) if args.claims else None
    other_measures = [m for m in claims.rules.measures if m != args.metric] if claims else []
    if args.paper_csv and "disagreement" in other_measures:
        raise LayercritError(f"{args.claims} judges under top-1 disagreement too, which a raw-results CSV does not "
                             "record: report from databases, or set [rules] measures = [\"criticality\"]")

    needs_calibrated = args.metric == "calibrated" or "calibrated" in other_measures
    if needs_calibrated and not args.calibrated_db:
        raise LayercritError("the calibrated measure is read from databases measured with --temperature: add "
                             "--calibrated-db STUDY.db" + (f" (or take it out of {args.claims}'s measures)"
                                                           if args.metric != "calibrated" else ""))

    def load(metric: str):
        if metric == "calibrated":
            return load_results(args.calibrated_db, reset=args.reset, baseline=args.baseline,
                                metadata=args.metadata, without=args.without, unit=args.unit, metric=metric,
                                only=args.only)
        return load_results(args.db, args.paper_csv, reset=args.reset, baseline=args.baseline,
                            metadata=args.metadata, without=args.without, unit=args.unit, metric=metric,
                            only=args.only)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReportWarning)  # printed below as one line each instead
        study = load(args.metric)
        claim_results = tuple(load(m) for m in other_measures)
        if lab is not None:
            table, _ = checked_lab(study, lab, args.lab_reference)  # a misfit: one error, before any output
    for message in study.warnings:
        print(f"layercrit: warning: {_with_flags(message)}", file=sys.stderr)
    for note in study.notes:
        print(f"layercrit: {_with_flags(note)}")
    if claims is not None:
        absent = sorted(claims.variants - set(table["variant"]))
        if absent:
            print(f"layercrit: warning: {args.claims} names variant(s) not in the lab table: {', '.join(absent)} "
                  "(their cells stay 'missing' until they are measured; check the spelling against lab_models.csv)",
                  file=sys.stderr)
    written = write_report(study, args.out, lab=lab, lab_reference=args.lab_reference, claims=claims,
                           claim_results=claim_results)
    figures = sorted({p.stem for p in written if p.suffix == ".png"})
    archs = f" in {len(study.archs)} architectures ({', '.join(study.archs)})" if len(study.archs) > 1 else ""
    print(f"wrote the report on {len(study.model_ids)} models x {len(study.layer_names)} layers{archs} to {args.out}: "
          f"{', '.join(figures)}, stages, summary.json{', lab.md' if lab is not None else ''} (open {args.out.rstrip('/')}/index.html)")
    if claims is not None:  # the verdicts at a glance; the cells behind them are in lab_claims.csv
        import pandas as pd

        verdicts = pd.read_csv(Path(args.out) / "lab_verdicts.csv")
        overall = verdicts.drop_duplicates("claim", keep="last")  # a claim's "(all)" row comes last
        print("claims: " + "; ".join(f"{c} {v}" for c, v in zip(overall["claim"], overall["verdict"]))
              + " (lab_verdicts.csv, lab.md)")
    return 0
