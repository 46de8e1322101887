"""zoo list, zoo fetch, zoo verify: the study's model zoo (``--model zoo:<id>`` everywhere else)."""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import LayercritError
from ..zoo import get_zoo_model, list_zoo_models
from ..zoo.fetch import expected_paths, fetch_model, is_cached, read_record, zoo_cache

ZOO_EPILOG = """\
examples:
  layercrit zoo list --category "adversarial training"
  layercrit zoo fetch robust_resnet50_linf_eps4.0          # into $LAYERCRIT_CACHE (default ~/.cache/layercrit)
  layercrit zoo verify resnet50_swav --file swav_800ep_pretrain.pth.tar swav_800ep_eval_linear.pth.tar
  layercrit measure --model zoo:robust_resnet50_linf_eps4.0 --data /path/imagenet/val --db study.db
"""


def register(sub) -> None:
    z = sub.add_parser("zoo", help="the study's 51 ImageNet ResNet-50s: list, download, verify checkpoints",
                       epilog=ZOO_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    zs = z.add_subparsers(dest="zoo_command", required=True, metavar="{list,fetch,verify}")

    ls = zs.add_parser("list", help="the registry, and which checkpoints are in the local cache")
    ls.add_argument("--category", help="only this category, e.g. 'adversarial training'")
    ls.add_argument("--format", default="table", choices=["table", "json"])
    ls.set_defaults(func=run_list)

    f = zs.add_parser("fetch", help="download checkpoints into the cache (records their sha256)")
    f.add_argument("model_id", nargs="?", help="zoo model id (see `layercrit zoo list`)")
    f.add_argument("--all", action="store_true", help="every model of the zoo")
    f.add_argument("--force", action="store_true", help="download again even if cached")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    f.set_defaults(func=run_fetch)

    v = zs.add_parser("verify", help="load local file(s) through a model's converter; exit 0 only on an exact fit")
    v.add_argument("model_id")
    v.add_argument("--file", required=True, nargs="+", metavar="PATH",
                   help="the checkpoint (backbone + head models: BACKBONE HEAD)")
    v.add_argument("--trust-pickle", action="store_true",
                   help="allow arbitrary unpickling (only for files you trust)")
    v.set_defaults(func=run_verify)


def _row(entry) -> dict:
    paths = expected_paths(entry)
    return {"model_id": entry.id, "category": entry.category, "display_name": entry.display_name,
            "top1": entry.top1, "epsilon": entry.epsilon, "norm": entry.norm, "layout": entry.layout,
            "normalized": entry.normalized, "arch": entry.arch,
            "sources": [{"kind": s.kind, "ref": s.ref, "role": s.role} for s in entry.sources],
            "cached": is_cached(entry),
            "files": {role: {"path": str(p), "sha256": (read_record(p) or {}).get("sha256") if p.is_file() else None}
                      for role, p in paths.items()}}


def run_list(args) -> int:
    rows = [_row(e) for e in list_zoo_models(args.category)]
    if args.format == "json":
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'MODEL ID':<53s} {'CATEGORY':<32s} {'TOP-1':>6s}  {'BUDGET':<12s} {'LAYOUT':<12s} CACHED")
    for r in rows:
        top1 = "-" if r["top1"] is None else f"{r['top1']:.2f}"
        budget = "" if r["norm"] is None else f"{r['norm']} {r['epsilon']:g}" + ("/255" if r["norm"] == "linf" else "")
        print(f"{r['model_id']:<53s} {r['category']:<32s} {top1:>6s}  {budget:<12s} {r['layout']:<12s} "
              f"{'yes' if r['cached'] else 'no'}")
    print(f"{len(rows)} models; {sum(r['cached'] for r in rows)} cached (cache: {_cache()})")
    return 0


def _cache() -> str:
    return str(zoo_cache())


def run_fetch(args) -> int:
    if bool(args.model_id) == bool(args.all):
        raise LayercritError("zoo fetch needs a model id or --all (not both): see `layercrit zoo list`")
    entries = list_zoo_models() if args.all else [get_zoo_model(args.model_id)]
    failed = []
    for entry in entries:
        try:
            paths = fetch_model(entry, force=args.force, progress=not args.no_progress)
        except LayercritError as e:
            if not args.all:
                raise
            print(f"layercrit: error: {e}", file=sys.stderr)
            failed.append(entry.id)
            continue
        if not paths:
            print(f"{entry.id}: in {entry.sources[0].kind}'s own cache")
        for role, p in paths.items():
            sha = (read_record(p) or {}).get("sha256", "not recorded")
            print(f"{entry.id}: {role} {p} (sha256 {sha})")
    if failed:
        print(f"layercrit: error: {len(failed)} of {len(entries)} downloads failed ({', '.join(failed)}): "
              "see the lines above", file=sys.stderr)
        return 2
    return 0


def run_verify(args) -> int:
    from ..models import weights_checksum  # lazy: `layercrit` starts (and answers Ctrl-C) without torch or pandas
    from ..zoo.load import load_zoo_network

    net, entry, report = load_zoo_network(args.model_id, list(args.file), trust_pickle=args.trust_pickle,
                                          download=False)
    notes = []
    if report.dropped:
        notes.append(f"{len(report.dropped)} documented ignorable keys dropped")
    if report.absent:
        notes.append(f"{len(report.absent)} num_batches_tracked buffers absent (not used in eval mode)")
    print(f"{entry.id}: exact fit ({entry.layout} layout): {report.loaded} tensors loaded"
          + (f"; {'; '.join(notes)}" if notes else ""))
    print(f"weights sha256 {weights_checksum(net)}")
    return 0
