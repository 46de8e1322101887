"""How far reduced precision moves the metrics: fp32 vs bf16 (or fp16) on the same inputs.

    python benchmarks/precision.py                                   # CPU: cifar_resnet50, 500 CIFAR-10 images
    python benchmarks/precision.py --spec arch:torchvision/resnet50 --data ../shared/data/imagenet-sample/val \\
        --samples 256 --device cuda --precision bf16                 # on a GPU

Prints, per metric, the largest and the mean absolute difference over all (layer, trial) rows.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import layercrit as lc

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", default="arch:cifar_resnet50")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10" / "test"))
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--trials", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp16"])
    args = p.parse_args()
    bundle = lc.create_model(args.spec)
    data = lc.load_data(args.data, input_size=bundle.input_size, samples=args.samples, seed=0, progress=False)
    tables = {prec: lc.measure(bundle, data, samples=None, trials=args.trials, device=args.device, precision=prec,
                               progress=False).set_index(["layer", "reset", "trial"])
              for prec in ("fp32", args.precision)}
    a, b = tables["fp32"], tables[args.precision].loc[tables["fp32"].index]
    print(f"{args.spec} on {len(data)} images, {len(a)} rows, {args.device}: {args.precision} minus fp32")
    print("| metric | max abs diff | mean abs diff |\n|---|---|---|")
    for m in ("criticality", "top1_acc", "top5_acc", "loss", "pred_cos_sim", "pred_agreement", "recovered_acc"):
        d = (b[m] - a[m]).abs()
        print(f"| {m} | {d.max():.4g} | {d.mean():.4g} |")
    print(f"mean criticality fp32 {a.criticality.mean():.3f} %, {args.precision} {b.criticality.mean():.3f} %")


if __name__ == "__main__":
    main()
