"""compress: remove the least critical residual blocks (or by a baseline rule), save, fine-tune."""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import validate
from ..errors import LayercritError
from ..paths import atomic_write, safe_name, write_text
from .common import MODEL_EPILOG, add_model_args, create_from_args, samples_arg
from .options import add_config_args

COMPRESS_EPILOG = """\
rules:
  criticality   greedy: measure every block's removal (--unit block --reset remove) on --data, remove the
                least critical, measure again, ... (default)
  magnitude     one shot: the blocks whose branch output weights have the smallest RMS
  random        one shot: blocks drawn with --seed
writes into --out: model.safetensors (loads as file:OUT/model.safetensors, its architecture recorded
inside), compress.json (blocks removed, steps, parameters, FLOPs, test top-1), finetuned/ (with
--finetune-epochs: the training lab's run folder).
example:
  layercrit compress --model file:runs/standard/model.safetensors --arch cifar_resnet50 \\
      --data ../shared/data/cifar10/train --samples 1000 --remove 4 \\
      --test-data ../shared/data/cifar10/test --finetune-epochs 1 --finetune-data ../shared/data/cifar10 \\
      --out compressed/standard-4
""" + MODEL_EPILOG

COMPARE_EPILOG = """\
example (the CIFAR-10 training lab's models, docs/compression.md):
  layercrit compress-compare --data ../shared/data/cifar10 --remove 2 4 --threads 1 \\
      --model standard=file:studies/runs/cifar10-methods/standard/model.safetensors \\
              improved=file:studies/runs/cifar10-methods/improved/model.safetensors \\
      --out docs/results/compression
"""


def register(sub) -> None:
    c = sub.add_parser("compress", help="remove the least critical residual blocks; save (and fine-tune) the model",
                       epilog=COMPRESS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(c, {"model": add_model_args(c)}, only=("unit", "types", "layers"))  # refused: see run_compress
    g = c.add_argument_group("what to remove")
    g.add_argument("--rule", default="criticality", choices=["criticality", "magnitude", "random"])
    g.add_argument("--remove", type=int, metavar="N", help="remove N blocks")
    g.add_argument("--max-drop", type=float, metavar="PP",
                   help="(criticality rule) remove blocks while top-1 on --data stays within PP points of the "
                        "full model's")
    g.add_argument("--seed", type=int, default=0, help="seed of the image draw and of the random rule (default 0)")
    g = c.add_argument_group("data")
    g.add_argument("--data", metavar="DIR", help="selection images the criticality rule measures on (use "
                   "training images: choosing on the test set would flatter the test accuracy)")
    g.add_argument("--samples", type=samples_arg, default=1000, help="selection images (default 1000)")
    g.add_argument("--test-data", metavar="DIR", help="report top-1 before and after on these images")
    g.add_argument("--test-samples", type=samples_arg, default=None, help="test images (default all)")
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--device", default="cpu")
    g = c.add_argument_group("fine-tuning (the training lab, docs/training.md)")
    g.add_argument("--finetune-epochs", type=int, default=0, help="epochs of fine-tuning (default 0: none)")
    g.add_argument("--finetune-data", metavar="DIR", help="CIFAR-10 root with train/ and test/")
    g.add_argument("--finetune-method", default="standard", help="training method (default standard)")
    g.add_argument("--finetune-lr", type=float, default=0.01, help="peak learning rate (default 0.01)")
    g.add_argument("--finetune-samples", type=int, default=0, help="training images per epoch (default 0: all)")
    g.add_argument("--threads", type=int, help="torch CPU threads")
    c.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist)")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=run_compress)

    k = sub.add_parser("compress-compare", help="criticality-guided block removal vs magnitude and random rules: "
                       "table and accuracy-vs-speed plot", epilog=COMPARE_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    k.add_argument("--model", nargs="+", action="extend", required=True, metavar="ID=SPEC",
                   help="models to compress, e.g. standard=file:runs/standard/model.safetensors (repeatable)")
    k.add_argument("--arch", help="architecture of file: specs whose weights do not record it")
    k.add_argument("--data", required=True, metavar="ROOT",
                   help="CIFAR-10-like root: selection and fine-tuning images from train/, test images from test/")
    k.add_argument("--remove", nargs="+", type=int, default=[2, 4], metavar="N", help="blocks to remove (default 2 4)")
    k.add_argument("--random-seeds", type=int, default=3, help="seeds of the random rule (default 3)")
    k.add_argument("--selection-samples", type=int, default=1000, help="training images the greedy rule measures on")
    k.add_argument("--test-samples", type=samples_arg, default=5000, help="test images (default 5000; 'all')")
    k.add_argument("--finetune-epochs", type=int, default=1, help="fine-tuning epochs (default 1; 0: none)")
    k.add_argument("--finetune-samples", type=int, default=5000, help="training images per fine-tuning epoch")
    k.add_argument("--finetune-lr", type=float, default=0.01)
    k.add_argument("--finetune-method", default="standard")
    k.add_argument("--speed-seconds", type=float, default=3.0, help="timing per model and batch size (default 3)")
    k.add_argument("--threads", type=int, help="torch CPU threads (fix it: speed-ups depend on it)")
    k.add_argument("--remeasure-speed", action="store_true",
                   help="only measure the speed-ups of the variants in OUT/compression.csv again (e.g. on a quiet "
                        "machine), then rewrite the summary and figure")
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: compression.csv (rerun resumes), compression_summary.csv, compression.md, "
                        "accuracy_vs_speed.png/.pdf")
    k.add_argument("--no-progress", action="store_true")
    k.set_defaults(func=run_compare)


def run_compress(args) -> int:
    import torch  # lazy: `layercrit` starts (and answers Ctrl-C) without torch or pandas

    from ..compress import compress
    from ..data import load_data
    from ..engine import resolve_device

    if args.remove is None and args.max_drop is None:
        raise LayercritError("say how much to remove: --remove N (blocks) or --max-drop PP (accuracy points)")
    if args.unit not in (None, "layer") or args.layers or args.types not in (None, "conv,linear"):
        raise LayercritError("compress chooses among all residual blocks: --unit, --types and --layers do not apply")
    if args.finetune_epochs and not args.finetune_data:
        raise LayercritError("--finetune-epochs needs --finetune-data (a CIFAR-10 root with train/ and test/)")
    if args.finetune_epochs < 0:
        raise LayercritError(f"--finetune-epochs must be >= 0, got {args.finetune_epochs}")
    resolve_device(args.device)
    if validate.threads(args.threads, "--threads"):
        torch.set_num_threads(args.threads)
    bundle = create_from_args(args)
    progress = not args.no_progress

    def load(path, samples):
        return load_data(path, input_size=bundle.input_size, samples=samples, seed=args.seed, progress=progress)

    data = load(args.data, args.samples) if args.data else None
    test = load(args.test_data, args.test_samples) if args.test_data else None
    finetune = None
    if args.finetune_epochs:
        finetune = {"method": args.finetune_method, "data": args.finetune_data, "epochs": args.finetune_epochs,
                    "lr": args.finetune_lr, "train_samples": args.finetune_samples, "seed": args.seed,
                    "threads": args.threads}
    info = compress(bundle, args.out, rule=args.rule, remove=args.remove, max_drop=args.max_drop, data=data,
                    test_data=test, seed=args.seed, batch_size=args.batch_size, device=args.device,
                    finetune=finetune, progress=progress)
    line = (f"removed {len(info['removed_blocks'])} block(s): {', '.join(info['removed_blocks']) or 'none'}; "
            f"parameters {info['params']['compressed'] / info['params']['base']:.1%}, "
            f"FLOPs {info['flops']['compressed'] / info['flops']['base']:.1%} of the original")
    if "test" in info:
        line += f"; test top-1 {info['test']['base_top1_acc']:.2f}% -> {info['test']['top1_acc']:.2f}%"
    if "finetuned" in info:
        line += f" -> {info['finetuned']['clean_test_acc']:.2f}% after fine-tuning"
    print(line + f"; saved to {args.out}")
    return 0


def run_compare(args) -> int:
    import torch  # lazy: `layercrit` starts (and answers Ctrl-C) without torch or pandas

    from ..compress.compare import compare_rules, remeasure_speed
    from ..compress.select import input_size
    from ..data import load_data
    from ..models import create_model

    specs = {}
    for item in args.model:
        model_id, sep, spec = item.partition("=")
        if not sep or not model_id or not spec:
            raise LayercritError(f"--model {item}: write ID=SPEC, e.g. standard=file:runs/standard/model.safetensors")
        safe_name(model_id, "--model id")  # it names folders under --out
        if model_id in specs:
            raise LayercritError(f"--model id '{model_id}' is given twice: model ids must be unique")
        specs[model_id] = spec
    root = Path(args.data)
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise LayercritError(f"--data {root} has no {split}/ folder: give a CIFAR-10-like root with train/ and test/")
    if any(n < 1 for n in args.remove) or args.random_seeds < 1:
        raise LayercritError("--remove takes positive block counts and --random-seeds at least 1")
    if validate.threads(args.threads, "--threads"):
        torch.set_num_threads(args.threads)
    models = {i: create_model(s, arch=args.arch, name=i) for i, s in specs.items()}
    if args.remeasure_speed:
        if not (Path(args.out) / "compression.csv").is_file():
            raise LayercritError(f"{args.out}/compression.csv not found: run the comparison first")
        table = remeasure_speed(models, args.out, speed_seconds=args.speed_seconds)
        write_comparison(table, Path(args.out))
        print(f"measured the speed-ups of {table['model_id'].isin(list(models)).sum()} variants again "
              f"in {args.out}/compression.csv")
        return 0
    size = input_size(next(iter(models.values())))
    progress = not args.no_progress
    selection = load_data(root / "train", input_size=size, samples=args.selection_samples, seed=args.seed,
                          progress=progress)
    test = load_data(root / "test", input_size=size, samples=args.test_samples, seed=args.seed, progress=progress)
    finetune = None
    if args.finetune_epochs:
        finetune = {"method": args.finetune_method, "data": str(root), "epochs": args.finetune_epochs,
                    "lr": args.finetune_lr, "train_samples": args.finetune_samples, "seed": args.seed,
                    "eval_samples": min(1000, len(test)), "threads": args.threads}  # the lab's own check; compared on --test-samples
    table = compare_rules(models, data=selection, test_data=test, remove=sorted(set(args.remove)),
                          random_seeds=args.random_seeds, out=args.out, finetune=finetune,
                          speed_seconds=args.speed_seconds, progress=progress)
    write_comparison(table, Path(args.out))
    print(f"{len(table)} variants in {args.out}/compression.csv; summary in {args.out}/compression.md")
    return 0


def write_comparison(table, out) -> None:
    """Summary CSV/Markdown and the accuracy-vs-speed figure from the comparison's rows."""
    from ..analysis.compression import compression_markdown, compression_summary  # lazy: pandas, matplotlib
    from ..report.compression import compression_figure
    from ..report.style import plain_text, undated

    summary = compression_summary(table)
    with atomic_write(out / "compression_summary.csv") as tmp:
        summary.to_csv(tmp, index=False)
    write_text(out / "compression.md", compression_markdown(summary))
    with plain_text():  # model ids drawn as they are (no mathtext)
        fig = compression_figure(table)
        for ext in ("png", "pdf"):
            with atomic_write(out / f"accuracy_vs_speed.{ext}") as tmp:
                fig.savefig(tmp, dpi=150, bbox_inches="tight", format=ext, **undated(ext))
