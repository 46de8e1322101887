"""Command line: a thin layer over the Python API (``layercrit.measure``, ``layercrit.export``, ...)."""
from __future__ import annotations

import argparse
import sys

from .errors import LayercritError

EPILOG_MEASURE = """\
model specs:
  arch:<name>                    freshly initialized registered architecture (seeded by --init-seed)
                                 or any timm model name, e.g. arch:cifar_resnet50, arch:resnet50
  timm:<name>                    timm model with pretrained weights (needs internet the first time)
  torchvision:<name>[:<weights>] torchvision model, e.g. torchvision:resnet50:IMAGENET1K_V1
  file:<path> --arch <name>      .safetensors or state-dict checkpoint of that architecture
resets:
  random                         the study's re-randomization from a fresh seeded instance (default)
  zero                           all parameters of the layer set to 0
  init:<checkpoint>              the layer's weights at the start of training
  interpolate:<alpha>[:<ckpt>]   (1-alpha) * trained + alpha * initial (the checkpoint, else a random draw)
example:
  layercrit measure --model arch:cifar_resnet50 --data ../shared/data/cifar10/test \\
      --samples 1000 --trials 3 --db study.db
"""


def _samples(text: str) -> int | None:
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of images (or 'all')") from None


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of numbers") from None


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True, metavar="SPEC", help="model spec (see below)")
    g.add_argument("--arch", help="architecture of a file: checkpoint (layercrit name, timm name or torchvision/<name>)")
    g.add_argument("--num-classes", type=int, help="class count where data and the architecture's default differ")
    g.add_argument("--init-seed", type=int, default=0, help="seed that initializes arch: models (default 0)")
    g.add_argument("--mean", type=_floats, help="override input normalization mean, e.g. 0.5,0.5,0.5")
    g.add_argument("--std", type=_floats, help="override input normalization std")
    g.add_argument("--trust-pickle", action="store_true",
                   help="allow checkpoints that need arbitrary unpickling (only for files you trust)")
    g.add_argument("--types", default="conv,linear", help="layer kinds: conv,linear,norm,embedding (default conv,linear)")
    g.add_argument("--layers", nargs="+", metavar="PATTERN",
                   help="glob patterns over module names; a leading ! excludes, e.g. 'layer4.*' '!*.downsample.*'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layercrit", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    m = sub.add_parser("measure", help="measure layer criticality of one model into a results database",
                       epilog=EPILOG_MEASURE, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_args(m)
    g = m.add_argument_group("data")
    g.add_argument("--data", required=True, metavar="DIR",
                   help="image folder (class subfolders, sorted = class index) or a folder with cifar-10-batches-py")
    g.add_argument("--samples", type=_samples, default=10000, help="images drawn once with --seed (default 10000; 'all')")
    g.add_argument("--split", default="test", choices=["train", "test"], help="split of torchvision-format CIFAR-10")
    g.add_argument("--input-size", type=int, help="override the model's input resolution")
    g = m.add_argument_group("measurement")
    g.add_argument("--db", required=True, help="SQLite results database (created or resumed)")
    g.add_argument("--name", help="model id in the database (default: from the spec)")
    g.add_argument("--category", help="model category, e.g. standard, adversarial, augmentation")
    g.add_argument("--reset", action="append", metavar="R", help="reset kind, repeatable (default random)")
    g.add_argument("--trials", type=int, default=3, help="trials of stochastic resets (default 3)")
    g.add_argument("--seed", type=int, default=0, help="seed of the image draw and the reset draws (default 0)")
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = sub.add_parser("export", help="export a results database as CSV or Parquet")
    e.add_argument("--db", required=True)
    e.add_argument("--out", required=True, help="output file: .csv or .parquet")
    e.add_argument("--layout", default="tidy", choices=["tidy", "paper"],
                   help="tidy: all columns; paper: exactly the original study's raw-results columns")
    e.add_argument("--reset", default="random", help="with --layout paper: which reset's rows (default random)")

    lay = sub.add_parser("layers", help="list a model's layers in forward order (what measure would reset)",
                         epilog=EPILOG_MEASURE, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_args(lay)
    lay.add_argument("--input-size", type=int, help="override the model's input resolution")

    sub.add_parser("archs", help="list layercrit's registered architectures")

    d = sub.add_parser("download-cifar10", help="download CIFAR-10 in torchvision's format (needs internet)")
    d.add_argument("root", help="folder to download into")
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def _create(args):
    from .models import create_model

    return create_model(args.model, arch=args.arch, num_classes=args.num_classes, init_seed=args.init_seed,
                        name=getattr(args, "name", None), trust_pickle=args.trust_pickle, mean=args.mean, std=args.std)


def _types(args) -> tuple[str, ...]:
    return tuple(t.strip() for t in args.types.split(",") if t.strip())


def run(args) -> int:
    if args.command == "measure":
        from .engine import measure, resolve_device

        resolve_device(args.device)  # fail before any loading
        bundle = _create(args)
        table = measure(bundle, args.data, layers=args.layers, types=_types(args), reset=args.reset or ["random"],
                        trials=args.trials, samples=args.samples, seed=args.seed, batch_size=args.batch_size,
                        device=args.device, store=args.db, category=args.category, input_size=args.input_size,
                        trust_pickle=args.trust_pickle, progress=not args.no_progress)
        summary = table.groupby("reset")["criticality"].mean()
        print(f"{bundle.model_id}: {len(table)} rows in {args.db}; base top-1 {table['base_top1_acc'].iloc[0]:.2f}%; "
              + ", ".join(f"mean criticality ({r}) {v:.2f}%" for r, v in summary.items()))
    elif args.command == "export":
        from .store import export

        table = export(args.db, args.out, layout=args.layout, reset=args.reset)
        print(f"wrote {len(table)} rows to {args.out} ({args.layout} layout)")
    elif args.command == "layers":
        from .resets import discover_layers

        bundle = _create(args)
        for layer in discover_layers(bundle.network, args.input_size or bundle.input_size, types=_types(args),
                                     patterns=args.layers):
            print(f"{layer.index:4d}  {layer.module_type:<10s} {layer.name}")
    elif args.command == "archs":
        from .models import get_arch, list_archs

        for name in list_archs():
            a = get_arch(name)
            print(f"{name:<22s} {a.num_classes:5d} classes  {a.input_size:4d} px")
    elif args.command == "download-cifar10":
        from .data import download_cifar10

        print(f"CIFAR-10 is in {download_cifar10(args.root)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except LayercritError as e:
        print(f"layercrit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("layercrit: interrupted: finished rows are saved; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
