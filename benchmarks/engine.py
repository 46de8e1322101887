"""Benchmark: naive vs cached engine vs cached + adaptive sampling, in one run, same inputs.

    python benchmarks/engine.py                 # both workloads, prints one table (markdown)
    python benchmarks/engine.py --workload b    # just one

Workloads (issue "Fast measurement engine"):
  a: ResNet-50 (torchvision layout, 224 px, untrained, seeded) on 64 images of
     ../shared/data/imagenet-sample/val, all 54 layers, 1 trial
  b: arch:cifar_resnet50 on 1,000 CIFAR-10 test images, all 54 layers, 3 trials

Each way runs in its own process (so its peak memory is its own); decoded images come from
the shared data cache, so decoding is not timed. Wall time covers `layercrit.measure` only.
FLOPs: counted with torch.utils.flop_counter per call (one full forward; each cached reset
evaluation) and multiplied by the images each call saw in the timed run. The theoretical
minimum fraction assumes a reset of layer L costs exactly the FLOPs of L and every layer
after it in forward order (plus one unmodified pass per image).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
WORKLOADS = {
    "a": dict(spec="arch:torchvision/resnet50", data=SHARED / "imagenet-sample" / "val", samples=64, trials=1,
              batch_size=32, label="ResNet-50, 224 px, 64 ImageNet images, 54 layers x 1 trial"),
    "b": dict(spec="arch:cifar_resnet50", data=SHARED / "cifar10" / "test", samples=1000, trials=3,
              batch_size=250, label="cifar_resnet50, 32 px, 1,000 CIFAR-10 images, 54 layers x 3 trials"),
}
WAYS = {"naive": dict(engine="naive"), "cached": dict(engine="cached"),
        "cached+ci1": dict(engine="cached", target_ci=1.0)}


def run_one(workload: str, way: str, out: Path, device: str, precision: str) -> None:
    """Child process: time one way, count its FLOPs, write JSON."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import layercrit as lc
    from layercrit.engine.graph import CachedGraph, no_inplace_modules

    w = WORKLOADS[workload]
    torch.manual_seed(0)
    bundle = lc.create_model(w["spec"])
    data = lc.load_data(w["data"], input_size=bundle.input_size, samples=w["samples"], seed=0, progress=False)
    start = time.perf_counter()
    table = lc.measure(bundle, data, samples=None, trials=w["trials"], batch_size=w["batch_size"], device=device,
                       precision=precision, progress=False, **WAYS[way])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)

    # FLOPs per image of one full forward pass, per module (for the theoretical minimum) and per cached reset call
    net = bundle.model.eval()
    layers = lc.discover_layers(bundle.network, bundle.input_size)
    x = data.images[:8].float().div(255)
    with torch.inference_mode(), no_inplace_modules(net):
        with FlopCounterMode(display=False) as fc:
            net(x)
        full = fc.get_total_flops() / len(x)
        by_module = fc.get_flop_counts()
        order = [f"NormalizedModel.model.{layer.name}" for layer in layers]
        layer_flops = [sum(by_module.get(name, {}).values()) / len(x) for name in order]
        downstream = [sum(layer_flops[i:]) for i in range(len(layers))]
        reset_cost = {}
        if WAYS[way]["engine"] == "cached":
            graph = CachedGraph(net, ["model." + layer.name for layer in layers])
            graph.run_base(x)
            for layer in layers:
                with FlopCounterMode(display=False) as fc:
                    graph.run_reset("model." + layer.name)
                reset_cost[layer.name] = fc.get_total_flops() / len(x)
    n = len(data)
    units = len(table)
    per_layer_downstream = dict(zip([layer.name for layer in layers], downstream))
    naive_flops = n * full * (1 + units)
    theory = n * full + sum(n * per_layer_downstream[layer] for layer in table.layer)
    if WAYS[way]["engine"] == "cached":
        executed = n * full + sum(ns * reset_cost[layer] for layer, ns in zip(table.layer, table.n_samples))
    else:
        executed = naive_flops
    out.write_text(json.dumps({
        "wall": wall, "images": int(table.n_samples.sum()), "peak_bytes": peak, "executed_flops": executed,
        "naive_flops": naive_flops, "theory_fraction": theory / naive_flops, "units": units,
        "results": table[["layer", "reset", "trial", "criticality", "criticality_ci", "top1_acc", "pred_cos_sim",
                          "loss", "pred_l1_err", "pred_l2_err", "pred_ce_loss", "pred_kl_div", "n_samples"]]
        .to_dict(orient="list"),
    }))


def compare(workload: str, device: str, precision: str) -> list[str]:
    import pandas as pd

    w = WORKLOADS[workload]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for way in WAYS:
            out = Path(tmp) / f"{way}.json"
            subprocess.run([sys.executable, __file__, "--one", way, "--workload", workload, "--json", str(out),
                            "--device", device, "--precision", precision,
                            "--samples", str(w["samples"])], check=True)
            results[way] = json.loads(out.read_text())
    naive = pd.DataFrame(results["naive"]["results"]).set_index(["layer", "reset", "trial"])
    lines = [f"\n**Workload {workload}**: {w['label']} ({device}, {precision})\n",
             "| way | wall [s] | images/s | speed-up | FLOP fraction | theoretical min | GFLOP/s | peak memory [MiB] "
             "| max metric diff vs naive | criticality within its CI |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for way, r in results.items():
        df = pd.DataFrame(r["results"]).set_index(["layer", "reset", "trial"]).loc[naive.index]
        metrics = ["criticality", "top1_acc", "pred_cos_sim", "loss", "pred_l1_err", "pred_l2_err", "pred_ce_loss",
                   "pred_kl_div"]
        diff = (df[metrics] - naive[metrics]).abs().to_numpy().max()
        inside = ((df.criticality - naive.criticality).abs() <= df.criticality_ci + 1e-9).sum()
        lines.append(
            f"| {way} | {r['wall']:.1f} | {r['images'] / r['wall']:.0f} | "
            f"{results['naive']['wall'] / r['wall']:.2f}x | {r['executed_flops'] / r['naive_flops']:.3f} | "
            f"{r['theory_fraction']:.3f} | {r['executed_flops'] / r['wall'] / 1e9:.1f} | {r['peak_bytes'] / 2**20:.0f} | "
            f"{diff:.2e} | {inside}/{len(df)} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", choices=sorted(WORKLOADS), action="append")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--samples", type=int, help="fewer images than the workload's (a quick smoke run)")
    p.add_argument("--one", choices=sorted(WAYS), help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.samples:
        for w in WORKLOADS.values():
            w["samples"] = args.samples
            w["label"] += f" (smoke run: {args.samples} images)"
    if args.one:
        run_one(args.workload[0], args.one, args.json, args.device, args.precision)
        return
    print(f"# engine benchmark: {os.cpu_count()} CPUs, torch threads as default")
    for workload in args.workload or sorted(WORKLOADS):
        print("\n".join(compare(workload, args.device, args.precision)), flush=True)


if __name__ == "__main__":
    main()
