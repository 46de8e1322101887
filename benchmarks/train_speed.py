"""Training throughput of one recipe step, fp32 vs bf16 autocast (and optionally channels_last off), in one run.

    python benchmarks/train_speed.py                    # cifar_resnet50, batch 128, 1 thread, standard step
    python benchmarks/train_speed.py --threads 2 --rounds 5 --steps 8
    python benchmarks/train_speed.py --compile          # adds bf16 under torch.compile (inductor; compiles first)

The ways are interleaved round by round (fp32, bf16, fp32, bf16, ...) so a machine whose load changes
during the run slows them alike; the table reports the median images/s per way and the ratio to fp32.
Each step is a full SGD step (forward, cross-entropy, backward, update) on random [0, 1] images, plus the
recipe's data augmentation (random crop + flip on uint8 tensors, torchvision v2) when --augment is given.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from layercrit.models import NormalizedModel, get_arch
from layercrit.train.data import to_float, train_transform


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="cifar_resnet50")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=6, help="timed steps per way and round (after 2 warm-up steps)")
    p.add_argument("--augment", default="flip-crop", help="per-image augmentation timed with the step ('none': off)")
    p.add_argument("--compile", action="store_true", help="also time bf16 with the network under torch.compile")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    arch = get_arch(args.arch)
    ways = {"fp32": (False, True), "bf16": (True, True), "fp32, contiguous (NCHW)": (False, False)}
    if args.compile:
        ways["bf16, torch.compile"] = (True, True)
    models = {}
    for name, (_, channels_last) in ways.items():
        net = NormalizedModel(arch.build(num_classes=10), arch.mean, arch.std)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        models[name] = (torch.compile(net) if "compile" in name else net).train(), opt
    images = torch.randint(0, 256, (args.batch_size, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (args.batch_size,))
    augment = train_transform(args.augment)

    def step(name: str) -> None:
        bf16, channels_last = ways[name]
        net, opt = models[name]
        x = torch.stack([augment(img) for img in images])
        x = to_float(x) if channels_last else x.float().div_(255)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(x), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if args.compile:  # the first calls compile (forward and backward): not timed
        t0 = time.perf_counter()
        for _ in range(3):
            step("bf16, torch.compile")
        print(f"torch.compile: first 3 steps (compiling) took {time.perf_counter() - t0:.0f} s")
    rates: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name in ways:
            for _ in range(2):
                step(name)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(name)
            rates[name].append(args.steps * args.batch_size / (time.perf_counter() - t0))
    base = statistics.median(rates["fp32"])
    print(f"{args.arch}, batch {args.batch_size}, {args.threads} thread(s), augment {args.augment}, "
          f"{args.rounds} rounds x {args.steps} steps, torch {torch.__version__}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}")
    print("| way | images/s (median) | vs fp32 |\n|---|---|---|")
    for name, r in rates.items():
        print(f"| {name} | {statistics.median(r):.0f} | {statistics.median(r) / base:.2f}x |")


if __name__ == "__main__":
    main()
