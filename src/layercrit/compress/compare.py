"""Criticality-guided removal against the baselines, at equal numbers of removed blocks.

For every model and every N: the greedy criticality rule, the weight-magnitude rule and the
random rule (several seeds) each remove N blocks (:func:`layercrit.compress.compress`, with
fine-tuning by the training lab); each variant's test top-1 before and after fine-tuning,
parameters, FLOPs, and its CPU throughput relative to the full model (both measured in one
run, at batch 1 and 64) go into one tidy table, one row per variant, appended as each variant
completes (a rerun skips the rows present).
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd

from ..data import EvalData
from ..errors import ConfigError
from ..models import ModelBundle, create_model
from ..paths import atomic_write, path_inside, safe_name, write_text, writing_into
from .cost import throughput
from .run import FINETUNED_DIR, MODEL_FILE, compress, top1
from .select import input_size, without_blocks

log = logging.getLogger("layercrit")

COLUMNS = ["model_id", "rule", "seed", "n_removed", "blocks", "base_top1_acc", "top1_acc", "finetuned_top1_acc",
           "base_params", "params", "params_ratio", "base_flops", "flops", "flops_ratio", "speedup_b1",
           "speedup_b64", "test_samples", "finetune"]


def compare_rules(models: dict[str, ModelBundle], *, data: EvalData, test_data: EvalData, remove: list[int],
                  random_seeds: int, out: str | Path, finetune: dict | None = None, speed_seconds: float = 3.0,
                  keep_models: bool = False, progress: bool = False) -> pd.DataFrame:
    """Run the comparison; rows go to ``out/compression.csv`` (returned as a DataFrame)."""
    out = Path(out)
    for model_id in models:  # each names folders under out/models: checked before anything is written
        safe_name(model_id, "model id")
    with writing_into(out):
        out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, models, {"selection_data": data.fingerprint, "test_data": test_data.fingerprint,
                                  "finetune": _describe(finetune)})
    table_path = out / "compression.csv"
    done = pd.read_csv(table_path) if table_path.is_file() else pd.DataFrame(columns=COLUMNS)
    keys = {(r.model_id, r.rule, int(r.seed), int(r.n_removed)) for r in done.itertuples()}
    plan = [(rule, seed) for rule, seeds in (("criticality", [0]), ("magnitude", [0]),
                                             ("random", list(range(random_seeds)))) for seed in seeds]
    work = out / "models"
    with writing_into(work):
        work.mkdir(exist_ok=True)
    for model_id, bundle in models.items():
        base_acc = None
        for n in remove:
            for rule, seed in plan:
                if (model_id, rule, seed, n) in keys:
                    continue
                folder = path_inside(work, f"{model_id}-{rule}-s{seed}-n{n}", "model id")
                shutil.rmtree(folder, ignore_errors=True)  # a variant interrupted before its row: start over
                shutil.rmtree(folder.with_name(folder.name + ".partial"), ignore_errors=True)
                base_acc = base_acc if base_acc is not None else top1(bundle, test_data)
                info = compress(bundle, folder, rule=rule, remove=n, data=data, seed=seed, finetune=finetune,
                                progress=progress)
                small = without_blocks(bundle, info["removed_blocks"])
                speed = speedups(bundle, small, speed_seconds)
                tuned = None
                if "finetuned" in info:  # evaluated here on the same test images as before fine-tuning
                    tuned = top1(create_model(f"file:{folder / FINETUNED_DIR / MODEL_FILE}"), test_data)
                row = {"model_id": model_id, "rule": rule, "seed": seed, "n_removed": n,
                       "blocks": " ".join(info["removed_blocks"]), "base_top1_acc": base_acc,
                       "top1_acc": top1(small, test_data),
                       "finetuned_top1_acc": tuned,
                       "base_params": info["params"]["base"], "params": info["params"]["compressed"],
                       "params_ratio": info["params"]["compressed"] / info["params"]["base"],
                       "base_flops": info["flops"]["base"], "flops": info["flops"]["compressed"],
                       "flops_ratio": info["flops"]["compressed"] / info["flops"]["base"],
                       **speed,
                       "test_samples": len(test_data), "finetune": _describe(finetune)}
                log.info(f"{model_id} {rule} s{seed} n{n}: {row['blocks']}: top-1 {row['top1_acc']:.2f}% "
                         f"(fine-tuned {row['finetuned_top1_acc']}), x{row['speedup_b64']:.2f} at batch 64")
                done = pd.concat([done, pd.DataFrame([row], columns=COLUMNS)], ignore_index=True)
                _write(done, table_path)
                if not keep_models:
                    shutil.rmtree(folder, ignore_errors=True)
    if not keep_models and not any(work.iterdir()):
        work.rmdir()
    return done


def speedups(bundle: ModelBundle, small: ModelBundle, seconds: float) -> dict[str, float]:
    """Throughput of ``small`` over ``bundle``'s, both measured in one run, at batch 1 and 64."""
    out = {}
    full, compressed = bundle.model.cpu(), small.model.cpu()  # CPU inference speed, whatever measured blocks
    for b in (1, 64):
        rates = throughput({"full": full, "compressed": compressed}, input_size(bundle), batch_size=b,
                           seconds=seconds)
        out[f"speedup_b{b}"] = rates["compressed"] / rates["full"]
    return out


def remeasure_speed(models: dict[str, ModelBundle], out: str | Path, *, speed_seconds: float = 3.0) -> pd.DataFrame:
    """Measure the speed-ups of every variant in ``out/compression.csv`` again (e.g. on a quieter
    machine): they depend only on which blocks are gone, so the variants are rebuilt, not retrained."""
    table_path = Path(out) / "compression.csv"
    _check_settings(Path(out), models, None)
    table = pd.read_csv(table_path)
    for i, r in table.iterrows():
        if r["model_id"] not in models:
            continue
        bundle = models[r["model_id"]]
        blocks = str(r["blocks"]).split() if isinstance(r["blocks"], str) else []
        for k, v in speedups(bundle, without_blocks(bundle, blocks), speed_seconds).items():
            table.loc[i, k] = v
        _write(table, table_path)
    return table


SETTINGS_FILE = "settings.json"


def _check_settings(out: Path, models: dict[str, ModelBundle], settings: dict | None) -> None:
    """Refuse to mix rows of other weights or other settings into one comparison (``settings``
    None: only check the models). Models may be added to a comparison later."""
    path = out / SETTINGS_FILE
    try:
        stored = json.loads(path.read_text()) if path.is_file() else {"models": {}}
        if not isinstance(stored, dict) or not isinstance(stored.get("models"), dict):
            raise ValueError("not a settings object")
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is damaged ({e}): delete it (and compression.csv) to start the comparison "
                          "afresh, or use another {out}") from None
    weights = {i: b.checksum() for i, b in models.items()}
    changed = [i for i, c in weights.items() if stored["models"].get(i, c) != c]
    if changed:
        raise ConfigError(f"{out} holds rows of other weights under the id(s) {', '.join(changed)}: "
                          "use other ids or another {out}")
    if settings is None:
        return
    differ = [k for k, v in settings.items() if k in stored and stored[k] != v]
    if differ:
        raise ConfigError(f"{out} holds a comparison with other {', '.join(differ)} settings: use the same "
                          "options, or another {out}")
    stored = {**stored, **settings, "models": {**stored["models"], **weights}}
    write_text(path, json.dumps(stored, indent=2))


def _write(table: pd.DataFrame, path: Path) -> None:
    with atomic_write(path) as tmp:
        table.to_csv(tmp, index=False)


def _describe(finetune: dict | None) -> str:
    if not finetune:
        return "none"
    shown = {k: v for k, v in finetune.items() if k not in ("data", "threads")}
    return " ".join(f"{k}={v}" for k, v in shown.items())
