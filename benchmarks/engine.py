"""Benchmark: naive vs cached engine, fp32 vs bf16, with and without adaptive sampling; one run, same inputs.

    python benchmarks/engine.py                              # workloads r and c (the precision table), markdown
    python benchmarks/engine.py --workload a --workload b    # the fp32 engine table (docs/results/engine-benchmark-cpu.md)
    python benchmarks/engine.py --workload g --device cuda --check --out table.md   # the GPU check (benchmarks/gpu.sh)

Workloads (models are freshly initialized and seeded unless said otherwise):
  a: ResNet-50 (torchvision layout, 224 px) on 64 ImageNet images, all 54 layers, 1 trial
  b: arch:cifar_resnet50 on 1,000 CIFAR-10 test images, all 54 layers, 3 trials
  r: ResNet-50, 224 px, 8 ImageNet images, 54 layers x 1 trial (bf16 at the study's resolution, CPU-sized)
  c: the training lab's *trained* standard cifar_resnet50 (studies/runs/cifar10-methods/standard) on 500
     CIFAR-10 test images, 54 layers x 1 trial (bf16 drift on a trained model)
  g: ResNet-50, 224 px, all 1,000 images of the ImageNet sample, 54 layers x 1 trial, batch 250 (GPU)

Ways: naive (one full forward pass per reset, fp32: the reference), cached, cached+ci1 (--target-ci 1),
cached+bf16 (--precision bf16), cached+bf16+ci1, cached+auto (--batch-size auto; its tuning is timed too). Each way runs in its own process (so its peak memory is its
own), the decoded images come from the data cache (decoded once, first, by this process), and the time covers
`layercrit.measure` only: on the CPU the measuring process's CPU time (with --threads 1 its compute time, which
other processes sharing the cores hardly move; wall time is shown too), on a GPU wall time. "images/s" counts
reset evaluations (image x unit) per second. Drift: each
way's rows against the naive fp32 rows (criticality and top-1 in percentage points). With --repeat N the ways
run N times in interleaved rounds (naive, cached, ..., naive, cached, ...) and the fastest round counts, which
reduces the noise of a shared machine. FLOPs: counted with torch.utils.flop_counter per call (one full forward;
each cached reset evaluation) and multiplied by the images each call saw. The theoretical minimum fraction
assumes a reset of layer L costs exactly the FLOPs of L and every layer after it in forward order (plus one
unmodified pass per image). A final table times plain forward passes, fp32 and bf16 interleaved in one process.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LAYERCRIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
LAB_STANDARD = ROOT / "studies" / "runs" / "cifar10-methods" / "standard" / "model.safetensors"
RESNET = "arch:torchvision/resnet50"
IMAGENET = SHARED / "imagenet-sample" / "val"
CIFAR = SHARED / "cifar10" / "test"
PRECISION_WAYS = ["naive", "cached", "cached+bf16", "cached+bf16+ci1"]
WORKLOADS = {
    "a": dict(spec=RESNET, data=IMAGENET, samples=64, trials=1, batch_size=32,
              label="ResNet-50, 224 px, 64 ImageNet images, 54 layers x 1 trial",
              ways=["naive", "cached", "cached+ci1"]),
    "b": dict(spec="arch:cifar_resnet50", data=CIFAR, samples=1000, trials=3, batch_size=250,
              label="cifar_resnet50, 32 px, 1,000 CIFAR-10 images, 54 layers x 3 trials",
              ways=["naive", "cached", "cached+ci1"]),
    "r": dict(spec=RESNET, data=IMAGENET, samples=8, trials=1, batch_size=8,
              label="ResNet-50 (untrained, seeded), 224 px, 8 ImageNet images, 54 layers x 1 trial",
              ways=["naive", "cached", "cached+bf16"]),  # with < 100 images --target-ci cannot stop early
    "c": dict(spec=f"file:{LAB_STANDARD}", arch="cifar_resnet50", data=CIFAR, samples=500, trials=1,
              batch_size=250, label="trained lab cifar_resnet50 (standard, 3 epochs), 32 px, 500 CIFAR-10 "
                                    "images, 54 layers x 1 trial",
              ways=["naive", "cached", "cached+ci1", "cached+bf16", "cached+bf16+ci1"]),
    "g": dict(spec=RESNET, data=IMAGENET, samples=1000, trials=1, batch_size=250,
              label="ResNet-50 (untrained, seeded), 224 px, 1,000 ImageNet images, 54 layers x 1 trial",
              ways=["naive", "cached", "cached+bf16", "cached+ci1", "cached+auto"]),
}
WAYS = {"naive": dict(engine="naive"), "cached": dict(engine="cached"),
        "cached+ci1": dict(engine="cached", target_ci=1.0),
        "cached+bf16": dict(engine="cached", precision="bf16"),
        "cached+bf16+ci1": dict(engine="cached", precision="bf16", target_ci=1.0),
        "cached+auto": dict(engine="cached", batch_size="auto")}  # --batch-size auto (its tuning is timed too)
METRICS = ["criticality", "top1_acc", "pred_cos_sim", "loss", "pred_l1_err", "pred_l2_err", "pred_ce_loss",
           "pred_kl_div"]


def _bundle(w: dict):
    import layercrit as lc

    return lc.create_model(w["spec"], arch=w["arch"]) if "arch" in w else lc.create_model(w["spec"])


def run_one(workload: str, way: str, out: Path, device: str, threads: int | None = None) -> None:
    """Child process: time one way, count its FLOPs, write JSON."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    from torch.utils.flop_counter import FlopCounterMode

    import layercrit as lc
    from layercrit.engine.graph import CachedGraph, no_inplace_modules

    w = WORKLOADS[workload]
    torch.manual_seed(0)
    bundle = _bundle(w)
    data = lc.load_data(w["data"], input_size=bundle.input_size, samples=w["samples"], seed=0, progress=False)
    import logging
    import re

    class Lines(logging.Handler):  # keeps the engine's log lines (--batch-size auto says what it chose)
        def __init__(self):
            super().__init__(logging.INFO)
            self.lines: list[str] = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    lines = Lines()
    logging.getLogger("layercrit").addHandler(lines)
    logging.getLogger("layercrit").setLevel(logging.INFO)
    kwargs = {"batch_size": w["batch_size"], **WAYS[way]}
    load0 = os.getloadavg()[0]
    cpu0 = time.process_time()
    start = time.perf_counter()
    table = lc.measure(bundle, data, samples=None, trials=w["trials"], device=device, progress=False, **kwargs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    load1 = os.getloadavg()[0]
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)

    # FLOPs per image of one full forward pass, per module (for the theoretical minimum) and per cached reset call
    net = bundle.model.eval()
    layers = lc.discover_layers(bundle.network, bundle.input_size)
    x = data.images[:8].float().div(255).to(next(net.parameters()).device)
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
        "batch_size": next((int(m.group(1)) for m in map(re.compile(r"--batch-size auto: (\d+)").search, lines.lines)
                            if m), kwargs["batch_size"]), "log": lines.lines,
        "wall": wall, "cpu": cpu, "images": int(table.n_samples.sum()), "peak_bytes": peak, "executed_flops": executed,
        "naive_flops": naive_flops, "theory_fraction": theory / naive_flops, "units": units, "load": [load0, load1],
        "results": table[["layer", "reset", "trial", "criticality", "criticality_ci", "top1_acc", "pred_cos_sim",
                          "loss", "pred_l1_err", "pred_l2_err", "pred_ce_loss", "pred_kl_div", "n_samples"]]
        .to_dict(orient="list"),
    }))


def compare(workload: str, device: str, ways: list[str], repeat: int = 1,
            threads: int | None = None) -> tuple[list[str], dict]:
    """Run the ways (in interleaved rounds), return the table's lines and a summary per way."""
    import pandas as pd

    import layercrit as lc

    w = WORKLOADS[workload]
    bundle = _bundle(w)  # decode once here: every child reads the images from the data cache
    lc.load_data(w["data"], input_size=bundle.input_size, samples=w["samples"], seed=0, progress=False)
    del bundle
    runs: dict[str, list[dict]] = {way: [] for way in ways}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(repeat):
            for way in ways:
                out = Path(tmp) / f"{way}-{rnd}.json"
                subprocess.run([sys.executable, __file__, "--one", way, "--workload", workload, "--json", str(out),
                                "--device", device, "--samples", str(w["samples"])]
                               + (["--threads", str(threads)] if threads else []), check=True)
                runs[way].append(json.loads(out.read_text()))
                print(f"  [{workload}] {way} round {rnd + 1}: {runs[way][-1]['wall']:.1f} s wall, "
                      f"{runs[way][-1]['cpu']:.1f} s CPU", file=sys.stderr, flush=True)
    # on the CPU the process's CPU time is the measure: with one torch thread it is the compute time, unlike
    # wall time hardly moved by other processes sharing the cores; on a GPU, wall time
    basis = "cpu" if device == "cpu" else "wall"
    results = {way: min(rs, key=lambda r: r[basis]) for way, rs in runs.items()}
    ref = pd.DataFrame(results["naive"]["results"]).set_index(["layer", "reset", "trial"])
    lines = [f"\n**Workload {workload}**: {w['label']} ({device}, batch {w['batch_size']}"
             + (f", fastest of {repeat} interleaved rounds" if repeat > 1 else "") + ")\n",
             f"Times: {'CPU time of the measuring process (wall time in brackets)' if basis == 'cpu' else 'wall'}."
             " images/s counts reset evaluations (image x unit).\n",
             f"| way | {basis} [s] | images/s | speed-up vs naive | vs cached fp32 | FLOP fraction | theoretical min "
             "| peak memory [MiB] | max metric diff vs naive | criticality drift max / mean [pp] "
             "| top-1 drift max [pp] | criticality within its CI | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    summary = {}
    for way, r in results.items():
        df = pd.DataFrame(r["results"]).set_index(["layer", "reset", "trial"]).loc[ref.index]
        diff = (df[METRICS] - ref[METRICS]).abs().to_numpy().max()
        dcrit = (df.criticality - ref.criticality).abs()
        dtop1 = (df.top1_acc - ref.top1_acc).abs()
        inside = (f"{((df.criticality - ref.criticality).abs() <= df.criticality_ci + 1e-9).sum()}/{len(df)}"
                  if WAYS[way].get("target_ci") else "-")  # without --target-ci every row has CI 0: all images
        t = r[basis]
        rate = r["images"] / t
        vs_cached = f"{results['cached'][basis] / t:.2f}x" if "cached" in results else "-"
        summary[way] = dict(rate=rate, seconds=t, wall=r["wall"], max_diff=float(diff), crit_max=float(dcrit.max()),
                            crit_mean=float(dcrit.mean()), top1_max=float(dtop1.max()))
        shown = f"{t:.1f} ({r['wall']:.1f})" if basis == "cpu" else f"{t:.1f}"
        label = f"{way} (batch {r['batch_size']})" if WAYS[way].get("batch_size") == "auto" else way
        lines.append(
            f"| {label} | {shown} | {rate:.0f} | {results['naive'][basis] / t:.2f}x | {vs_cached} | "
            f"{r['executed_flops'] / r['naive_flops']:.3f} | {r['theory_fraction']:.3f} | "
            f"{r['peak_bytes'] / 2**20:.0f} | {diff:.2e} | {dcrit.max():.3f} / {dcrit.mean():.4f} | "
            f"{dtop1.max():.2f} | {inside} | {r['load'][0]:.1f}-{r['load'][1]:.1f} |")
    return lines, summary


def forward_speed(device: str, rounds: int = 3, seconds: float = 4.0) -> list[str]:
    """Plain forward passes, fp32 and bf16 interleaved in one process: the precision speed-up alone."""
    import contextlib

    import torch

    import layercrit as lc

    lines = [f"\n**Forward passes alone** (fp32 and bf16 autocast interleaved, {rounds} rounds of ~{seconds:.0f} s "
             f"{'CPU time' if device == 'cpu' else ''} each, the best round counts; {device})\n",
             "| model | batch | fp32 images/s | bf16 images/s | bf16 speed-up |", "|---|---|---|---|---|"]
    for spec, size, batch in ((RESNET, 224, 256 if device.startswith("cuda") else 16),
                              ("arch:cifar_resnet50", 32, 250)):
        torch.manual_seed(0)
        net = lc.create_model(spec).model.eval().to(device).to(memory_format=torch.channels_last)
        x = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
        best = {"fp32": 0.0, "bf16": 0.0}
        for _ in range(rounds):
            for prec in best:
                ctx = (torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if prec == "bf16"
                       else contextlib.nullcontext())
                with torch.inference_mode(), ctx:
                    net(x)  # warm-up
                    if device.startswith("cuda"):
                        torch.cuda.synchronize()
                    clock = time.process_time if device == "cpu" else time.perf_counter
                    n, t0 = 0, clock()
                    while clock() - t0 < seconds:
                        net(x)
                        if device.startswith("cuda"):
                            torch.cuda.synchronize()
                        n += batch
                    best[prec] = max(best[prec], n / (clock() - t0))
        lines.append(f"| {spec} ({size} px) | {batch} | {best['fp32']:.0f} | {best['bf16']:.0f} | "
                     f"{best['bf16'] / best['fp32']:.2f}x |")
    return lines


def header(device: str) -> str:
    import torch

    from layercrit.engine.hardware import cpu_bf16_kind, precision_speed_note

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = (f"# engine benchmark: {os.cpu_count()} CPUs ({cpu}; bf16 path: {cpu_bf16_kind()}), "
            f"torch {torch.__version__} with {torch.get_num_threads()} threads, load average at start "
            f"{os.getloadavg()[0]:.1f}")
    if device.startswith("cuda"):
        import torch.cuda

        major, minor = torch.cuda.get_device_capability()
        text += (f"\n\nGPU: {torch.cuda.get_device_name()} (compute capability {major}.{minor}), CUDA "
                 f"{torch.version.cuda}; fp32 convolutions may use TF32: "
                 f"{torch.backends.cudnn.allow_tf32}, fp32 matmuls: {torch.get_float32_matmul_precision()}")
    note = precision_speed_note("bf16", device)
    if note:
        text += f"\n\nNote: {note}"
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", choices=sorted(WORKLOADS), action="append")
    p.add_argument("--ways", help="comma-separated ways (default: the workload's own list); "
                                  f"any of {', '.join(WAYS)}; naive is always run (the reference)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--samples", type=int, help="fewer images than the workload's (a quick smoke run)")
    p.add_argument("--repeat", type=int, default=1, help="interleaved rounds of all ways; the fastest counts")
    p.add_argument("--no-forward", action="store_true", help="skip the forward-pass fp32/bf16 table")
    p.add_argument("--threads", type=int, help="torch threads in every process (default: torch's own); on a shared "
                                               "machine 1 avoids oversubscription")
    p.add_argument("--check", action="store_true",
                   help="exit 1 unless the cached fp32 rows (cached, cached+auto) equal the naive rows to within 1e-5")
    p.add_argument("--out", type=Path, help="also write the Markdown to this file")
    p.add_argument("--one", choices=sorted(WAYS), help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.samples:
        for w in WORKLOADS.values():
            if args.samples < w["samples"]:
                w["samples"], w["batch_size"] = args.samples, min(w["batch_size"], args.samples)
                w["label"] += f" (smoke run: {args.samples} images)"
    if args.one:
        run_one(args.workload[0], args.one, args.json, args.device, args.threads)
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    lines = [header(args.device)]
    print(lines[0], flush=True)
    failed = []

    def save() -> None:  # after every table: a run cut short still leaves what it measured
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text("\n".join(lines) + "\n")

    for workload in args.workload or ["r", "c"]:
        ways = args.ways.split(",") if args.ways else WORKLOADS[workload]["ways"]
        unknown = [w for w in ways if w not in WAYS]
        if unknown:
            p.error(f"unknown way(s) {', '.join(unknown)}: use {', '.join(WAYS)}")
        ways = ["naive"] + [w for w in ways if w != "naive"]
        table, summary = compare(workload, args.device, ways, args.repeat, args.threads)
        for exact in ("cached", "cached+auto"):  # fp32 on every image: must equal naive up to float rounding
            if exact in summary:
                ok = summary[exact]["max_diff"] <= 1e-5
                table.append(f"\n{exact} = naive (all metrics within 1e-5): **{'yes' if ok else 'NO'}** "
                             f"(max difference {summary[exact]['max_diff']:.2e})")
                if not ok:
                    failed.append(f"{workload} {exact}")
        print("\n".join(table), flush=True)
        lines += table
        save()
    if not args.no_forward:
        table = forward_speed(args.device)
        print("\n".join(table), flush=True)
        lines += table
    lines.append(f"\nTotal benchmark time {time.perf_counter() - t0:.0f} s; load average at the end "
                 f"{os.getloadavg()[0]:.1f}.")
    print(lines[-1])
    save()
    if args.check and failed:
        print(f"FAILED: not equal to naive: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
