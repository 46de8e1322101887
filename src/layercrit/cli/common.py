"""Argument helpers shared by command modules: model specs and layer selection."""
from __future__ import annotations

import argparse
import logging

from ..errors import LayercritError
from ..paths import check_output_file, write_text

MODEL_EPILOG = """\
model specs:
  arch:<name>                    freshly initialized registered architecture (seeded by --init-seed)
                                 or any timm model name, e.g. arch:cifar_resnet50, arch:resnet50
  timm:<name>                    timm model with pretrained weights (needs internet the first time)
  torchvision:<name>[:<weights>] torchvision model, e.g. torchvision:resnet50:IMAGENET1K_V1
  file:<path> --arch <name>      .safetensors or state-dict checkpoint of that architecture
  file:<path> --arch <file.py>:<fn>   ... of an architecture in your own code (also <package.module>:<fn>;
                                 arch:<file.py>:<fn> is an untrained one): fn(num_classes=N) builds it.
                                 Give its input normalization: --mean/--std, or --normalize none
  zoo:<id> [--checkpoint PATH]   a ResNet-50 of the study's zoo (see `layercrit zoo list`); downloaded into
                                 the cache on first use, or read from PATH
"""


def samples_arg(text: str) -> int | None:
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of images (or 'all')") from None


def floats_arg(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of numbers") from None


def add_model_args(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The model flags (create_model's options), in a group "model" that is returned (a command adds the
    unit selection of MeasureConfig to it, see options.add_config_args)."""
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True, metavar="SPEC", help="model spec (see below)")
    g.add_argument("--arch", help="architecture of a file: checkpoint: a layercrit name, a timm name, torchvision/<name>, "
                                  "or your own code: path/to/file.py:callable or package.module:callable (runs that code)")
    g.add_argument("--num-classes", type=int, help="class count (default: from the checkpoint's last Linear layer, "
                                                   "else the architecture's)")
    g.add_argument("--init-seed", type=int, default=0, help="seed that initializes arch: models (default 0)")
    g.add_argument("--mean", type=floats_arg, help="override input normalization mean, e.g. 0.5,0.5,0.5")
    g.add_argument("--std", type=floats_arg, help="override input normalization std")
    g.add_argument("--normalize", choices=["none"],
                   help="none: feed [0, 1] images as they are (a model that normalizes itself or was trained on raw "
                        "input); a model with no known normalization needs this or --mean/--std")
    g.add_argument("--checkpoint", metavar="PATH",
                   help="zoo: models: a checkpoint file downloaded by hand (BACKBONE,HEAD for split models)")
    g.add_argument("--trust-pickle", action="store_true",
                   help="allow checkpoints that need arbitrary unpickling (only for files you trust)")
    g.add_argument("--key-map", action="append", metavar="auto|FILE|PATTERN=REPLACEMENT",
                   help="a file: checkpoint from another codebase, named otherwise than --arch: auto (pair tensors "
                        "by kind and shape in order, only where unique), a TOML file of rules, or a regex rename "
                        "(repeatable; in order, each applied to the previous result); strict either way")
    g.add_argument("--key-map-out", metavar="FILE",
                   help="write the mapping --key-map found as a TOML key map (pins it: --key-map FILE)")
    return g


def create_from_args(args):
    from ..models import create_model  # lazy: `layercrit` starts (and answers Ctrl-C) without torch or pandas

    if args.normalize == "none" and (args.mean is not None or args.std is not None):
        raise LayercritError("--normalize none and --mean/--std contradict each other: give one of them")
    extra = {"normalize": None} if args.normalize == "none" else {}
    key_map, key_map_out = getattr(args, "key_map", None), getattr(args, "key_map_out", None)
    if key_map_out is not None:
        if key_map is None:
            raise LayercritError("--key-map-out writes the mapping of --key-map: give --key-map auto (or rules)")
        check_output_file(key_map_out, "--key-map-out")
    bundle = create_model(args.model, arch=args.arch, num_classes=args.num_classes, init_seed=args.init_seed,
                          name=getattr(args, "name", None), trust_pickle=args.trust_pickle, mean=args.mean,
                          std=args.std, checkpoint=args.checkpoint, category=getattr(args, "category", None),
                          key_map=None if key_map is None else tuple(key_map), **extra)
    if key_map_out is not None and bundle.key_map is not None:
        from ..models.keymap import mapping_toml

        write_text(key_map_out, mapping_toml(bundle.key_map, header=f"{args.model} -> {args.arch}"),
                   what="--key-map-out")
        logging.getLogger("layercrit").info(f"key map written to {key_map_out} (pin it: --key-map {key_map_out})")
    return bundle
