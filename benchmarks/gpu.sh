#!/usr/bin/env bash
# The GPU check (issue 16), ready to run on any CUDA machine; installs nothing, takes about 2-3 minutes.
#
#   bash benchmarks/gpu.sh                 # table -> $OUT/engine-benchmark-gpu.md if $OUT is set, else docs/results/
#
# Measures images/s of naive / cached / cached+bf16 / cached+--target-ci 1 (and cached with --batch-size auto)
# on ResNet-50 (torchvision layout, untrained, seeded) at 224 px with the 1,000 images of the ImageNet sample
# (../shared/data/imagenet-sample/val, one per class; else ./shared/data/...; LAYERCRIT_SHARED_DATA overrides), 54 layers
# x 1 trial at batch 250, checks that the cached engine's rows equal the naive engine's (all metrics within 1e-5),
# reports bf16's drift against fp32 and the bf16 speed-up of plain forward passes, and writes one Markdown file.
# Uses the repository's own sources (PYTHONPATH=src: layercrit need not be installed) with whatever torch,
# torchvision, timm, pandas, safetensors and tqdm the machine has. Exit status: 0 ok, 1 cached != naive,
# 2 something missing (one line says what).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-$(command -v python3 || command -v python || true)}"
[ -n "$PY" ] || { echo "gpu.sh: no python3 on PATH (set PYTHON=/path/to/python)"; exit 2; }
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export LAYERCRIT_CACHE="${LAYERCRIT_CACHE:-$(mktemp -d)}"  # decoded images: nothing written to ~/.cache
DATA="${LAYERCRIT_SHARED_DATA:-$ROOT/../shared/data}"
[ -d "$DATA" ] || [ ! -d "$ROOT/shared/data" ] || DATA="$ROOT/shared/data"  # a copy with shared/ inside the tree
export LAYERCRIT_SHARED_DATA="$DATA"
OUTDIR="${OUT:-$ROOT/docs/results}"

"$PY" - <<'EOF' || exit 2
import importlib, sys
missing = []
for name in ("torch", "torchvision", "timm", "pandas", "numpy", "safetensors", "tqdm", "PIL"):
    try:
        importlib.import_module(name)
    except Exception as e:  # noqa: BLE001  (a broken install counts as missing)
        missing.append(f"{name} ({type(e).__name__})")
if missing:
    print(f"gpu.sh: missing Python modules: {', '.join(missing)}; this script installs nothing "
          f"(python: {sys.executable})")
    sys.exit(2)
import torch
if not torch.cuda.is_available():
    print(f"gpu.sh: no CUDA GPU visible to torch {torch.__version__} (built for CUDA {torch.version.cuda})")
    sys.exit(2)
try:
    import layercrit  # noqa: F401
except Exception as e:  # noqa: BLE001
    print(f"gpu.sh: cannot import layercrit from {sys.path[0]}/src: {type(e).__name__}: {e}")
    sys.exit(2)
EOF
[ -d "$DATA/imagenet-sample/val" ] || {
  echo "gpu.sh: the ImageNet sample is not at $DATA/imagenet-sample/val (set LAYERCRIT_SHARED_DATA)"; exit 2; }

mkdir -p "$OUTDIR"
echo "gpu.sh: writing $OUTDIR/engine-benchmark-gpu.md" >&2
timeout 290 "$PY" benchmarks/engine.py --workload g --device cuda --check --out "$OUTDIR/engine-benchmark-gpu.md"
