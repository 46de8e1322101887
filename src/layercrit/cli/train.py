"""train: one model with one training method (the training-method lab, see docs/training.md)."""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
from pathlib import Path

from ..errors import LayercritError

TRAIN_EPILOG = """\
methods: standard, improved, augmix, randaugment, autoaugment, gaussian-noise, pgd-linf, pgd-l2, simclr,
         frozen-random (`layercrit train --list-methods` prints each with its recipe)
writes into --out: init.safetensors (epoch 0, for --reset init:), model.safetensors, run.json (sidecar);
an interrupted run resumes from its last completed epoch when rerun with the same command.
examples:
  layercrit train --method standard --out runs/standard --epochs 15
  layercrit train --method pgd-linf --eps 8/255 --out runs/pgd-linf-8
  layercrit measure --model file:runs/standard/model.safetensors --arch cifar_resnet50 \\
      --data ../shared/data/cifar10/test --samples 2000 --db study.db
"""

_HELP = {
    "epochs": "epochs of the main phase (simclr: contrastive pre-training; frozen-random: probe)",
    "eps": "adversarial budget in [0, 1] input space: 2/255, 0.0078 (linf) or 0.5 (l2)",
    "steps": "attack steps during training (1 = FGSM with random start)",
    "step_size": "attack step size (default 1.25*eps for 1 step, else 2.5*eps/steps)",
    "train_samples": "train on a random subset of N training images (default: all)",
    "eval_samples": "test images for the clean accuracy (default: all)",
    "precision": "fp32 (default) or bf16: autocast of the training forward passes (1.6x faster on a CPU with "
                 "avx512_bf16; evaluation stays fp32)",
    "save_epochs": "also write epoch-N.safetensors after these epochs, e.g. 1,3,10 (a training trajectory)",
    "init_from": "start from these weights (a .safetensors of --arch) instead of a fresh initialization: fine-tuning",
}


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"'{text}' is not true or false")


def _train_config_module():
    """A copy of ``layercrit.train.config`` (plain dataclasses: the hyperparameters' names and types), loaded
    without running ``layercrit.train``'s ``__init__``, which imports PyTorch: ``layercrit --help`` must stay
    fast. Only the flags are read from it; running a command imports the package as usual."""
    name = f"{__package__}._train_config"  # its own name: layercrit.train.config stays the package's
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "train" / "config.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look the module up while the class is made
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def register(sub) -> None:
    TrainConfig = _train_config_module().TrainConfig

    t = sub.add_parser("train", help="train a model with one training method (standard, improved, pgd-linf, ...)",
                       epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--method", help="training method (see below)")
    t.add_argument("--out", help="output folder (created; an interrupted run there resumes)")
    t.add_argument("--data", default="../shared/data/cifar10",
                   help="CIFAR-10 root: train/ and test/ image folders, or cifar-10-batches-py (default %(default)s)")
    t.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--list-methods", action="store_true", help="list the training methods and exit")
    g = t.add_argument_group("hyperparameters (defaults depend on --method; all are recorded in run.json)")
    for f in dataclasses.fields(TrainConfig):
        if f.name == "method":
            continue
        kind = {"int": int, "float": float, "bool": _bool, "str": str}.get(str(f.type), str)
        if f.name == "eps":
            kind = str
        g.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind,
                       metavar={"eps": "EPS", "save_epochs": "N,N,..."}.get(f.name, str(f.type).upper()),
                       help=_HELP.get(f.name))
    t.set_defaults(func=run_train)


def run_train(args) -> int:
    from ..train import HYPERPARAMETERS, get_recipe, list_methods, train  # lazy: `layercrit` starts (and answers Ctrl-C) without torch or pandas

    if args.list_methods:
        for m in list_methods():
            print(f"{m:16s} {get_recipe(m).summary}")
        return 0
    if not args.method:
        raise LayercritError("--method is required: use one of " + ", ".join(list_methods()))
    if not args.out:
        raise LayercritError("--out is required: the folder that receives the weights and run.json")
    hp = {k: getattr(args, k) for k in HYPERPARAMETERS if getattr(args, k) is not None}
    get_recipe(args.method)  # unknown method: fail before loading data
    s = train(args.method, args.data, args.out, progress=not args.no_progress, threads=args.threads, **hp)
    robust = f", robust {s['robust_test_acc']:.2f}% ({s['robust_eval']['attack']})" if "robust_test_acc" in s else ""
    print(f"{s['method']}: clean test accuracy {s['clean_test_acc']:.2f}%{robust}; {s['epochs']} epochs, "
          f"{s['images_seen']} images in {s['train_seconds']:.0f} s -> {args.out}/model.safetensors, "
          f"init.safetensors, run.json")
    return 0
