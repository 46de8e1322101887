"""What the cached engine's first-batch check costs: the same measurement with the check and with it skipped,
interleaved in one process (a ratio, not a timing to compare across machines).

    python benchmarks/cached_check.py                    # arch:cifar_resnet50, 512 noise images, 54 layers x 1 trial
    python benchmarks/cached_check.py --images 2000 --rounds 3

The check (engine/evaluation.py, ``_Evaluation._cached_matches_full``) compares the cached engine with full forward
passes on 4 images of the first batch, for the unmodified model and each unit; skipping it is what the engine did
before it existed. CPU time of the measuring process, the fastest of the rounds, after one warm-up measurement.
"""
from __future__ import annotations

import argparse
import time

import torch

import layercrit as lc
from layercrit.engine import evaluation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of (with, without)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    data = lc.EvalData.from_tensors(torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=g),
                                    torch.arange(args.images) % 10, [str(i) for i in range(10)])
    model = lc.create_model("arch:cifar_resnet50")
    checked = evaluation._Evaluation._cached_matches_full
    ways = {"with the check": checked, "check skipped": lambda self, x, jobs: True}
    best: dict[str, float] = {}
    lc.measure(model, data, engine="cached", trials=1, samples=None, progress=False)  # warm-up, not counted
    try:
        for _ in range(args.rounds):
            for name, check in ways.items():
                evaluation._Evaluation._cached_matches_full = check  # type: ignore[method-assign]
                start = time.process_time()
                lc.measure(model, data, engine="cached", trials=1, samples=None, progress=False)
                best[name] = min(best.get(name, float("inf")), time.process_time() - start)
    finally:
        evaluation._Evaluation._cached_matches_full = checked  # type: ignore[method-assign]
    for name, seconds in best.items():
        print(f"{name:16s} {seconds:7.1f} s CPU (fastest of {args.rounds})")
    print(f"ratio with / skipped: {best['with the check'] / best['check skipped']:.3f}")


if __name__ == "__main__":
    main()
