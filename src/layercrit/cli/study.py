"""study run: train what a study file lists and is missing, measure every model, skip what is done."""
from __future__ import annotations

import argparse

from ..errors import LayercritError
from .measure import add_backend_args, executor_from_args, resets_epilog
from .options import add_config_args, given_config

STUDY_EPILOG = """\
example:
  layercrit study run studies/cifar10-methods.toml --db study.db          # rerun to resume
  layercrit study run studies/cifar10-methods.toml --db study.db --only standard pgd-linf-8
  layercrit report --db study.db --metadata study.metadata.csv ...        # display names, accuracies, eps
file format: docs/training.md ("Studies")
"""


def register(sub) -> None:
    s = sub.add_parser("study", help="run a study file: train missing models, measure all into one database")
    ssub = s.add_subparsers(dest="study_command", required=True)
    r = ssub.add_parser("run", help="train what is missing, measure every model, skip what is done",
                        epilog=resets_epilog() + STUDY_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("study", metavar="STUDY.toml")
    r.add_argument("--db", required=True, help="SQLite results database (created or resumed)")
    r.add_argument("--only", nargs="+", metavar="ID", help="only these model ids")
    r.add_argument("--runs", metavar="DIR", help="training outputs (default: runs/<study name> next to the file)")
    r.add_argument("--train-only", action="store_true", help="train what is missing, measure nothing")
    r.add_argument("--threads", type=int, help="torch CPU threads for training and measuring (default: torch's "
                   "choice; 1 per process when several share a machine)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    measurement = r.add_argument_group("measurement (replace the study file's [measure] settings)")
    add_config_args(r, dict.fromkeys(("model", "data", "measurement", "speed"), measurement))
    add_backend_args(r)
    r.set_defaults(func=run_study_cmd)
    ls = ssub.add_parser("show", help="check a study file and list its models (with --trained: accuracies, time)")
    ls.add_argument("study", metavar="STUDY.toml")
    ls.add_argument("--runs", metavar="DIR", help="training outputs (default: runs/<study name> next to the file)")
    ls.add_argument("--trained", action="store_true",
                    help="the lab-trained models: status, clean/robust test accuracy, epochs, training time")
    ls.add_argument("--csv", metavar="FILE", help="with --trained: also write the table as CSV")
    ls.set_defaults(func=show_study_cmd)
    acc = ssub.add_parser("accuracies", help="per model (snapshots included): clean/robust accuracy, confidence, "
                                             "entropy, epoch, training time, as CSV")
    acc.add_argument("study", metavar="STUDY.toml")
    acc.add_argument("--out", required=True, metavar="FILE", help="CSV to write")
    acc.add_argument("--runs", metavar="DIR", help="training outputs (default: runs/<study name> next to the file)")
    acc.add_argument("--only", nargs="+", metavar="ID", help="only these model ids")
    acc.add_argument("--no-progress", action="store_true", help="no progress bars")
    acc.set_defaults(func=accuracies_cmd)


def run_study_cmd(args) -> int:
    from ..study import run_study  # lazy: `layercrit` starts (and answers Ctrl-C) without torch or pandas

    summary = run_study(args.study, args.db, only=args.only, runs=args.runs, train_only=args.train_only,
                        progress=not args.no_progress, threads=args.threads, executor=executor_from_args(args),
                        **given_config(args))
    for info in summary:
        acc = info.get("clean_test_acc", info.get("base_top1_acc"))
        acc_text = "" if acc is None else f"  acc {acc:.2f}%"
        print(f"{info['id']:24s} {info.get('category') or '-':14s} trained: {info.get('trained', '-'):5s} "
              f"measured: {info['measured']}{acc_text}")
    return 0


def show_study_cmd(args) -> int:
    from ..study import load_study, training_table  # lazy: `layercrit` starts (and answers Ctrl-C) without torch or pandas

    if args.trained:
        table = training_table(args.study, args.runs)
        if args.csv:
            table.to_csv(args.csv, index=False)
        shown = table.drop(columns=["name", "robust_eval", "torch_threads"])
        counts = {c: (lambda v: "-" if v is None or v != v else f"{int(v)}") for c in ("epochs", "images_seen")}
        shown = shown.astype({"clean_test_acc": float, "robust_test_acc": float, "train_seconds": float,
                              "images_per_second": float})
        print(shown.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.1f}", formatters=counts))
        return 0
    if args.csv:
        raise LayercritError("--csv writes the --trained table: add --trained")
    st = load_study(args.study, args.runs)
    print(f"{st.name}: data {st.data}, arch {st.arch}, seed {st.seed}, samples {st.samples}, trials {st.trials}, "
          f"runs {st.runs}")
    for m in st.models:
        what = f"method {m.method} {m.hyperparameters}" if m.method else f"spec {m.spec}"
        print(f"  {m.id:24s} {m.category or '-':14s} {what}")
    return 0


def accuracies_cmd(args) -> int:
    from ..study.accuracies import accuracy_table  # lazy: `layercrit` starts (and answers Ctrl-C) without torch or pandas

    table = accuracy_table(args.study, args.runs, only=args.only, progress=not args.no_progress)
    table.to_csv(args.out, index=False)
    shown = table[["model_id", "epoch", "clean_test_acc", "robust_test_acc", "mean_confidence", "mean_entropy"]]
    print(shown.to_string(index=False, na_rep="-"))
    print(f"{len(table)} models -> {args.out}")
    return 0
