"""measure, export, layers, archs, download-cifar10."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ..errors import LayercritError
from . import flag
from .common import MODEL_EPILOG, add_model_args, create_from_args
from .options import add_config_args, config_from_args, render

if TYPE_CHECKING:
    from ..engine import Executor

MEASURE_EXAMPLES = """\
example:
  layercrit measure --model arch:cifar_resnet50 --data ../shared/data/cifar10/test \\
      --samples 1000 --trials 3 --db study.db
  layercrit measure --model arch:cifar_resnet50 --data ../shared/data/cifar10/test --unit block \\
      --reset random --reset remove --db study.db          # residual blocks (Veit et al. lesions)
  layercrit measure --backend ray --ray-address auto --model zoo:resnet50_swav --data /shared/imagenet/val \\
      --device cuda --gpus-per-task 1 --db study.db        # spread over a Ray cluster (docs/scale.md)
"""


def resets_epilog() -> str:
    """The registered reset kinds, one line each (from the registry: a new kind appears here by itself)."""
    from ..resets.kinds import get_reset_kind, list_reset_kinds  # torch-free

    kinds = [k for k in map(get_reset_kind, list_reset_kinds()) if k is not None]
    width = max(30, *(len(k.usage) + 1 for k in kinds))
    lines = ["resets:", *(f"  {k.usage:<{width}} {render(k.summary)}" for k in kinds)]
    return "\n".join(lines) + "\n"


def register(sub) -> None:
    m = sub.add_parser("measure", help="measure layer criticality of one model into a results database",
                       epilog=MODEL_EPILOG + resets_epilog() + MEASURE_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = {"model": add_model_args(m), "data": m.add_argument_group("data")}
    groups["data"].add_argument("--data", required=True, metavar="DIR", help="image folder (class subfolders, "
                                "sorted = class index) or a folder with cifar-10-batches-py")
    g = groups["measurement"] = m.add_argument_group("measurement")
    g.add_argument("--db", required=True, help="SQLite results database (created or resumed)")
    g.add_argument("--name", help="model id in the database (default: from the spec)")
    g.add_argument("--category", help="model category, e.g. standard, adversarial, augmentation")
    g.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    groups["speed"] = m.add_argument_group("speed")
    add_config_args(m, groups)  # every MeasureConfig option (engine/config.py)
    add_backend_args(m)
    m.set_defaults(func=run_measure)

    e = sub.add_parser("export", help="export a results database as CSV or Parquet")
    e.add_argument("--db", required=True)
    e.add_argument("--out", required=True, help="output file: .csv or .parquet")
    e.add_argument("--layout", default="tidy", choices=["tidy", "paper"],
                   help="tidy: all columns; paper: exactly the original study's raw-results columns")
    e.add_argument("--reset", default="random", help="with --layout paper: which reset's rows (default random)")
    e.add_argument("--unit", choices=["layer", "block"],
                   help="only layer or only block rows (default: tidy all, paper layer)")
    e.set_defaults(func=run_export)

    lay = sub.add_parser("layers", help="list a model's layers (or --unit block: residual blocks) in forward order",
                         epilog=MODEL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(lay, {"model": add_model_args(lay)}, only=("unit", "types", "layers", "input_size"))
    lay.set_defaults(func=run_layers)

    sub.add_parser("archs", help="list layercrit's registered architectures").set_defaults(func=run_archs)

    d = sub.add_parser("download-cifar10", help="download CIFAR-10 in torchvision's format (needs internet)")
    d.add_argument("root", help="folder to download into")
    d.set_defaults(func=run_download_cifar10)


def add_backend_args(p: argparse.ArgumentParser) -> None:
    """--backend and the Ray options (shared with commands that run many models)."""
    g = p.add_argument_group("scale-out (docs/scale.md)")
    g.add_argument("--backend", default="local", choices=["local", "ray"],
                   help="local: this process (default); ray: tasks of (layer group, trial) on a Ray cluster, "
                        "this process the only writer of --db")
    g.add_argument("--ray-address", metavar="ADDR",
                   help="Ray cluster to join: auto (the cluster this machine belongs to), HOST:PORT or "
                        "ray://HOST:10001 (default: start a local Ray instance)")
    g.add_argument("--gpus-per-task", type=float, metavar="N",
                   help="GPUs per task (default 1 with --device cuda, else 0; 0.5 puts two tasks on a GPU)")
    g.add_argument("--cpus-per-task", type=float, metavar="N",
                   help="CPUs per task (default 1 with GPUs; on the CPU, as many as torch uses here: CPU tasks run "
                        "with this machine's torch thread count, so their numbers equal a local run's)")
    g.add_argument("--layers-per-task", type=int, metavar="N",
                   help="layers per task (default: all of a model's layers, one task per trial); smaller spreads "
                        "one model over more workers at the cost of one extra unmodified pass per task")
    g.add_argument("--max-retries", type=int, metavar="N",
                   help="retries of a task whose worker died before a clear error (default 3)")
    g.add_argument("--ray-data", choices=["object_store", "path"],
                   help="object_store: decode the images here and ship them once through Ray's object store "
                        "(default); path: every worker reads --data (and $LAYERCRIT_CACHE) from a shared filesystem")


def executor_from_args(args: argparse.Namespace) -> Executor:
    """The executor --backend picks: LocalExecutor, or RayExecutor with the Ray options (checked here,
    before anything is loaded)."""
    from ..engine import LocalExecutor  # lazy: `layercrit` starts (and answers Ctrl-C) without torch or pandas

    given = {"address": args.ray_address, "gpus_per_task": args.gpus_per_task, "cpus_per_task": args.cpus_per_task,
             "layers_per_task": args.layers_per_task, "max_retries": args.max_retries, "data_mode": args.ray_data}
    if args.backend != "ray":
        used = [flag(k) for k, v in given.items() if v is not None]
        if used:
            raise LayercritError(f"{', '.join(used)} need(s) --backend ray")
        return LocalExecutor()
    from ..scale.ray import RayExecutor, RayOptions  # Ray is optional: the package that needs it is imported here

    return RayExecutor(RayOptions(**{k: v for k, v in given.items() if v is not None}))


def run_measure(args: argparse.Namespace) -> int:
    import numpy as np  # lazy: `layercrit` starts (and answers Ctrl-C) without torch or pandas

    from ..engine import measure
    from ..store import METRICS

    config = config_from_args(args)
    executor = executor_from_args(args)
    executor.check(args.device)  # fail before any loading (with Ray, the workers' devices count)
    bundle = create_from_args(args)
    table = measure(bundle, args.data, config, store=args.db, executor=executor, device=args.device,
                    progress=not args.no_progress)
    metrics = [m for m in METRICS if m in table.columns]
    bad = ~np.isfinite(table[metrics].astype(float).fillna(0.0).to_numpy()).all(axis=1)
    if "criticality" in table.columns:  # NULL in the database: a NaN that SQLite could not store
        bad |= table["criticality"].isna().to_numpy()
    summary = table[~bad].groupby("reset")["criticality"].mean()
    base = float(table["base_top1_acc"].iloc[0]) if len(table) else float("nan")
    what = "criticality" if config.output == "probs" else f"criticality of {config.output}"
    base_text = f"{base:.2f}%" if np.isfinite(base) else f"n/a (--output {config.output} has no class scores)"
    line = (f"{bundle.model_id}: {len(table)} rows in {args.db}; base top-1 {base_text}; "
            + ", ".join(f"mean {what} ({r}) {v:.2f}%" for r, v in summary.items()))
    if bad.any():  # never a clean-looking summary over NaN: count them, say where they are
        by_reset = table[bad].groupby("reset").size()
        line += ("; " if len(summary) else "") + f"{int(bad.sum())} of {len(table)} rows have non-finite metrics (" + \
            ", ".join(f"{r}: {n}" for r, n in by_reset.items()) + "; recorded as such, column nonfinite; left out " \
            "of the means)"
        print(f"layercrit: warning: {int(bad.sum())} row(s) have non-finite metrics (NaN or Inf): the reset's outputs "
              "overflowed; they are recorded as such and flagged in reports", file=sys.stderr)
    print(line)
    for warning in _closing_warnings(bundle.spec, bundle.num_classes, float(table["base_top1_acc"].iloc[0]),
                                     int(config.samples or table["n_samples"].max())):
        print(f"layercrit: warning: {warning}", file=sys.stderr)
    print(f"next: layercrit report --db {args.db} --out report/    (figures and an interactive page; or the rows: "
          f"layercrit export --db {args.db} --out results.csv)")
    return 0


def _closing_warnings(spec: str, num_classes: int | None, base_top1: float, n_images: int) -> list[str]:
    """What makes a measurement's numbers suspect: an untrained network, accuracy no better than chance."""
    out = []
    if spec.startswith("arch:"):
        arch = spec.split(":", 1)[1]
        out.append(f"{spec} is a freshly initialized, untrained network: its criticality describes random "
                   f"weights, not a trained model's decisions; to measure trained weights use --model file:<checkpoint> "
                   f"--arch {arch}")
    if num_classes and num_classes > 1 and n_images > 0 and at_chance(base_top1, num_classes, n_images):
        out.append(f"base top-1 {base_top1:.2f}% is at chance level for {num_classes} classes "
                   f"({100 / num_classes:.1f}%): the model does not recognize this data, so its criticality numbers "
                   "mean little; check the weights, the input normalization (--mean/--std, --normalize) and --data")
    return out


def at_chance(top1: float, num_classes: int, n_images: int) -> bool:
    """Whether top-1 (in %) is within 3 standard errors above guessing among ``num_classes`` classes on
    ``n_images`` images (or below it)."""
    p = 1 / num_classes
    return top1 / 100 <= p + 3 * (p * (1 - p) / n_images) ** 0.5


def run_export(args) -> int:
    from ..store import export  # lazy: `layercrit` starts (and answers Ctrl-C) without torch or pandas

    table = export(args.db, args.out, layout=args.layout, reset=args.reset, unit=args.unit)
    print(f"wrote {len(table)} rows to {args.out} ({args.layout} layout)")
    return 0


def run_layers(args) -> int:
    from ..resets import discover_blocks, discover_layers  # lazy: `layercrit` starts (and answers Ctrl-C) without torch or pandas

    config = config_from_args(args)
    bundle = create_from_args(args)
    size = config.input_size or bundle.input_size
    if size is None:
        raise LayercritError(f"the input resolution of {bundle.arch} is unknown: give --input-size (the image size it "
                             "was trained on, e.g. 32 for CIFAR-10, 224 for ImageNet)")
    patterns = list(config.layers)
    found = (discover_blocks(bundle.network, size, patterns=patterns) if config.unit == "block"
             else discover_layers(bundle.network, size, types=config.types, patterns=patterns))
    for layer in found:
        print(f"{layer.index:4d}  {layer.module_type:<10s} {layer.name}")
    return 0


def run_archs(args) -> int:
    from ..models import get_arch, list_archs  # lazy: `layercrit` starts (and answers Ctrl-C) without torch or pandas

    for name in list_archs():
        a = get_arch(name)
        print(f"{name:<22s} {a.num_classes:5d} classes  {a.input_size:4d} px")
    return 0


def run_download_cifar10(args) -> int:
    from ..data import download_cifar10  # lazy: `layercrit` starts (and answers Ctrl-C) without torch or pandas

    print(f"CIFAR-10 is in {download_cifar10(args.root)}")
    return 0
