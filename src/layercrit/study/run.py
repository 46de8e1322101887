"""``run_study(path, db)``: train what is missing, measure every model, skip what is done.

Several ``study run`` processes may work through one study and database side by side (one per core, or
per machine on a shared file system): a run folder is trained by one process at a time and a model is
measured by one process at a time; the others leave it to that process and go on with the next model
(BusyError). A trajectory checkpoint waits until its run has finished.
"""
from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..engine import Executor, MeasureConfig, measure
from ..engine.config import output_label
from ..errors import BusyError, LayercritError
from ..models import create_model
from ..paths import atomic_write, lock_holder
from ..store import ResultStore
from ..threads import torch_threads
from ..train import INIT_FILE, MODEL_FILE, missing_weights, read_sidecar, train
from .spec import LAB_INIT, ModelEntry, Study, load_study

log = logging.getLogger("layercrit")


def eval_source(study: Study) -> tuple[Path, str]:
    """(data folder, split) measured: ``eval_data``, else ``<data>/test``, else torchvision-format data."""
    if study.eval_data is not None:
        return study.eval_data, "test"
    if (study.data / "test").is_dir():
        return study.data / "test", "test"
    return study.data, "test"


def unfinished_run(study: Study, spec: str | None) -> str | None:
    """The id of the study's lab run whose folder holds the ``file:`` checkpoint ``spec`` (a trajectory
    snapshot) while that run has not finished; else None."""
    if not spec or not spec.startswith("file:"):
        return None
    folder = Path(spec[5:]).parent.resolve()
    for entry in study.models:
        if entry.method and (study.runs / entry.id).resolve() == folder and read_sidecar(folder) is None:
            return entry.id
    return None


def _finished(db: Path, model_id: str, config: MeasureConfig) -> bool:
    """Whether ``model_id`` is measured to the end in ``db`` with these samples, trials, resets, temperature and
    output (anything else that differs is the measurement's to refuse or resume)."""
    with ResultStore(db, create=False) as reader:
        runs = reader.runs()
    row = runs[runs["model_id"] == model_id]
    if row.empty or row["finished"].isna().iloc[0]:
        return False
    recorded = json.loads(row["config"].iloc[0])
    return ((config.samples is None or recorded.get("samples") == config.samples)
            and recorded.get("trials") == config.trials and recorded.get("resets") == list(config.reset)
            and recorded.get("temperature") == config.temperature  # absent in runs without one: None
            and recorded.get("output", "probs") == output_label(config.output))


@dataclass
class _Prepared:
    """One model of a study, ready to measure: its spec, create_model options and resets."""

    spec: str
    bundle_kw: dict[str, Any]
    resets: list[str]


def run_study(path: str | Path, db: str | Path, *, only: list[str] | None = None, runs: str | Path | None = None,
              train_only: bool = False, progress: bool = True, threads: int | None = None,
              executor: Executor | None = None, **overrides: Any) -> list[dict]:
    """Run a study file; return one dict per model (id, status, paths, accuracies).

    ``overrides``: MeasureConfig fields that replace the file's measurement settings (``samples=500``).
    ``executor`` measures each model (default: :class:`LocalExecutor`, here; a ``RayExecutor``
    rebuilds each model on the cluster from its source, so the files must be visible to the workers).
    """
    study = load_study(path, runs)
    config = study.config.replace(**overrides)
    entries = study.select(only)
    if any(e.method for e in entries) and not study.data.is_dir():
        raise LayercritError(f"{study.path}: data folder {study.data} not found: fix data = ... "
                             "(relative paths are resolved against the study file's folder)")
    summary: list[dict] = []
    pending: list[str] = []  # left to other processes, or waiting for a run to finish
    for i, entry in enumerate(entries, 1):
        tag = f"[{i}/{len(entries)}] {entry.id}"
        info: dict = {"id": entry.id, "name": entry.name, "category": entry.category}
        prepared = _prepare(study, entry, tag, info, train_only=train_only, progress=progress, threads=threads)
        if prepared is None:
            pending.append(entry.id)
        elif train_only:
            info["measured"] = "skipped (training only)"
        elif not _measure(study, config, entry, prepared, Path(db), tag, info, executor=executor, progress=progress,
                          threads=threads):
            pending.append(entry.id)
        else:
            write_metadata(study, [info], Path(db))  # per model: a process killed later loses none of it
        summary.append(info)
    if pending:
        log.warning(f"{len(pending)} model(s) left to other processes or waiting for a run: {', '.join(pending)}; "
                    "run `layercrit study run` again once those have finished")
    return summary


def _prepare(study: Study, entry: ModelEntry, tag: str, info: dict, *, train_only: bool, progress: bool,
             threads: int | None) -> _Prepared | None:
    """Train a lab model if it is missing; the model's spec and resets. None: left to another process or
    waiting for a run to finish (``info`` says which)."""
    resets = list(study.resets)
    if entry.method:
        out = study.runs / entry.id
        already = read_sidecar(out) is not None
        log.info(f"{tag}: {'trained' if already else 'training'} ({entry.method}) in {out}")
        try:
            sidecar = train(entry.method, study.data, out, progress=progress, threads=threads, **entry.hyperparameters)
        except BusyError as e:
            log.info(f"{tag}: left to another process ({e})")
            info.update(trained="busy", measured="left to the process training it")
            return None
        info.update(trained="done" if already else "now", out=str(out), clean_test_acc=sidecar["clean_test_acc"],
                    robust_test_acc=sidecar.get("robust_test_acc"), sidecar=sidecar, spec=f"file:{out / MODEL_FILE}")
        return _Prepared(info["spec"], {"arch": sidecar["arch"], "num_classes": len(sidecar["data"]["classes"])},
                         [f"init:{out / INIT_FILE}" if r == LAB_INIT else r for r in resets])
    if entry.spec is None:  # load_study gives every model a method or a spec
        raise LayercritError(f"{study.path}: model {entry.id} has neither a method nor a spec")
    info["spec"] = entry.spec
    waits_for = unfinished_run(study, entry.spec)
    if waits_for is not None and not train_only:
        log.info(f"{tag}: waits for run {waits_for} to finish training (a later `study run` measures it)")
        info["measured"] = f"waits for {waits_for}"
        return None
    return _Prepared(entry.spec, entry.spec_options(), [r for r in resets if r != LAB_INIT])  # no initial weights known


def _measure(study: Study, config: MeasureConfig, entry: ModelEntry, prepared: _Prepared, db: Path, tag: str,
             info: dict, *, executor: Executor | None, progress: bool, threads: int | None) -> bool:
    """Measure one model into ``db`` unless it is finished there; False: left to another process."""
    data_path, split = eval_source(study)
    config = config.replace(reset=tuple(prepared.resets), split=split,
                            input_size=entry.input_size or config.input_size)
    # the database is only read here; it is written by measure() once the model and data are loaded, so a
    # model that cannot be built (a bad spec, a file that is no checkpoint) leaves nothing behind
    if db.is_file() and db.stat().st_size > 0 and _finished(db, entry.id, config):
        log.info(f"{tag}: already measured in {db}")
        info["measured"] = "done"
    else:
        log.info(f"{tag}: measuring {prepared.spec}")
        gone = missing_weights(study.runs / entry.id) if entry.method else None
        if gone:  # checked here, where the weights are read: training-only and finished models need none
            raise LayercritError(gone)
        model = create_model(prepared.spec, name=entry.id, category=entry.category, **prepared.bundle_kw)
        try:
            with torch_threads(threads):  # like training: on its own core(s) beside other processes
                measure(model, str(data_path), config, store=str(db), executor=executor, device=study.device,
                        progress=progress)
        except BusyError as e:
            log.info(f"{tag}: left to another process ({e})")
            info["measured"] = "left to the process measuring it"
            return False
        info["measured"] = "now"
    with ResultStore(db, create=False) as reader:
        runs_df = reader.runs()
    row = runs_df[runs_df["model_id"] == entry.id]
    info["base_top1_acc"] = None if row.empty else row["base_top1_acc"].iloc[0]
    return True


def metadata_path(db: Path) -> Path:
    return db.with_name(db.stem + ".metadata.csv")


def write_metadata(study: Study, summary: list[dict], db: Path) -> Path:
    """``<db>.metadata.csv`` (model_id, category, accuracy, epsilon, norm, display_name) for
    ``layercrit report --metadata``; merged with rows already there from other runs of the study."""
    path = metadata_path(db)
    rows: dict[str, dict] = {}
    if path.is_file():
        with path.open(newline="") as f:
            rows = {r["model_id"]: r for r in csv.DictReader(f)}
    for info in summary:
        hp = (info.get("sidecar") or {}).get("hyperparameters", {})
        eps, norm = None, None
        if hp.get("norm") and hp.get("eps"):
            norm = hp["norm"]
            eps = round(hp["eps"] * 255, 4) if norm == "linf" else hp["eps"]  # the zoo's units (linf in /255)
        acc = info.get("clean_test_acc", info.get("base_top1_acc"))
        rows[info["id"]] = {"model_id": info["id"], "category": info.get("category") or "", "accuracy":
                            "" if acc is None else round(float(acc), 6), "epsilon": "" if eps is None else eps,
                            "norm": norm or "", "display_name": info.get("name") or info["id"]}
    with atomic_write(path, what="metadata file") as tmp, tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["model_id", "category", "accuracy", "epsilon", "norm", "display_name"])
        w.writeheader()
        w.writerows(rows.values())
    return path


TRAINING_COLUMNS = ["model_id", "name", "category", "method", "status", "clean_test_acc", "robust_test_acc",
                    "robust_eval", "epochs", "images_seen", "train_seconds", "images_per_second", "torch_threads"]


def training_table(path: str | Path, runs: str | Path | None = None) -> pd.DataFrame:
    """One row per lab-trained model of a study: trained or not, clean and robust test accuracy,
    epochs, images seen, training time (from each run's ``run.json``)."""
    study = load_study(path, runs)
    rows = []
    for m in study.models:
        if not m.method:
            continue
        out = study.runs / m.id
        sc = read_sidecar(out) or {}
        status = ("weights missing" if missing_weights(out) else "trained") if sc else \
            "training" if lock_holder(out) else \
            "interrupted" if (out / "resume.pt").is_file() else "not trained"
        robust = sc.get("robust_eval") or {}
        rows.append({"model_id": m.id, "name": m.name, "category": m.category, "method": m.method, "status": status,
                     "clean_test_acc": sc.get("clean_test_acc"), "robust_test_acc": sc.get("robust_test_acc"),
                     "robust_eval": f"{robust['attack']}, eps {robust['eps']:.4g}, {robust['images']} images"
                     if robust else None,
                     **{k: sc.get(k) for k in ("epochs", "images_seen", "train_seconds", "images_per_second",
                                               "torch_threads")}})
    return pd.DataFrame(rows, columns=TRAINING_COLUMNS)
