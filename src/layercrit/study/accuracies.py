"""``accuracy_table(study)``: per model of a study, how accurate and how confident it is.

One row per model (lab-trained, trajectory checkpoint or given spec): method, variant (the method and what
the study file sets for the model beyond its seed: runs of one variant are its seeds), training seed and
epoch, clean top-1 on the whole test split (from the run's sidecar where the lab measured it),
PGD robust top-1 (adversarial runs), and on the images the study measures (the same draw of
``samples`` with the study's seed): top-1, mean max-softmax confidence and mean softmax entropy.
Confidence is the quantity the cosine-based criticality is sensitive to (a flat softmax leaves
little room for the cosine to move), so the study's findings can be read against it.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ..accuracy import accuracy, confidence
from ..data import load_data
from ..errors import LayercritError
from ..models import create_model
from ..train import MODEL_FILE, missing_weights, read_sidecar
from .run import eval_source, unfinished_run
from .spec import ModelEntry, Study, load_study

log = logging.getLogger("layercrit")

COLUMNS = ["model_id", "name", "category", "method", "variant", "seed", "epoch", "final_epoch", "clean_test_acc",
           "test_images", "robust_test_acc", "robust_eval", "eval_top1_acc", "mean_confidence", "mean_entropy",
           "eval_images", "train_seconds", "started_at", "start_git_commit", "finish_git_commit"]


def network_epochs(sidecar: dict) -> int | None:
    """The epochs that trained the network: all of them, except a linear probe fitted after a contrastive
    phase (SimCLR's 40 + 10 probe epochs count 40, as its snapshots count their contrastive epochs)."""
    phases = [h.get("phase") for h in sidecar.get("history", [])]
    if phases and "probe" in phases and any(p != "probe" for p in phases):
        return sum(p != "probe" for p in phases)
    return sidecar.get("epochs")


def _lab_row(study: Study, entry: ModelEntry, sidecar: dict) -> dict:
    robust = sidecar.get("robust_eval") or {}
    epochs = network_epochs(sidecar)
    return {"method": entry.method, "variant": entry.variant, "seed": sidecar.get("seed"), "epoch": epochs,
            "final_epoch": epochs, "clean_test_acc": sidecar.get("clean_test_acc"),
            "test_images": sidecar["data"]["test_images"], "robust_test_acc": sidecar.get("robust_test_acc"),
            "robust_eval": f"{robust['attack']}, eps {robust['eps']:.4g}, {robust['images']} images" if robust else None,
            "train_seconds": sidecar.get("train_seconds"), **_provenance(sidecar)}


def _provenance(sidecar: dict) -> dict:
    """When the run started and from which commit (absent before run.json recorded it), and the commit it
    finished from: what `report --claims` needs to tell whether claims were fixed before the run."""
    return {"started_at": sidecar.get("started_at"), "start_git_commit": sidecar.get("start_git_commit"),
            "finish_git_commit": sidecar.get("git_commit")}


def _snapshot_row(path: Path) -> dict | None:
    """A trajectory checkpoint ``<run>/epoch-N.safetensors``: its numbers from the run's sidecar."""
    sidecar = read_sidecar(path.parent)
    if sidecar is None:
        return None
    snaps = {s["file"]: s for s in sidecar.get("snapshots", [])}
    if path.name not in snaps:
        return None
    snap = snaps[path.name]
    seconds = sum(h["seconds"] for h in sidecar["history"] if h["epoch"] <= snap["epoch"])
    return {"method": sidecar["method"], "seed": sidecar["seed"], "epoch": snap["epoch"],
            "final_epoch": network_epochs(sidecar), "clean_test_acc": snap["clean_test_acc"],
            "test_images": sidecar["data"]["test_images"], "train_seconds": round(seconds, 1),
            **_provenance(sidecar)}


def accuracy_table(path: str | Path, runs: str | Path | None = None, *, only: list[str] | None = None,
                   progress: bool = True) -> pd.DataFrame:
    """The table for every model of the study that exists (untrained lab models are skipped)."""
    study = load_study(path, runs)
    variants = {e.id: e.variant for e in study.models if e.method}
    data_path, split = eval_source(study)
    test_cache: dict = {}
    eval_cache: dict = {}
    rows = []
    for entry in study.select(only):
        row: dict = {"model_id": entry.id, "name": entry.name, "category": entry.category}
        if entry.method:
            sidecar = read_sidecar(study.runs / entry.id)
            if sidecar is None:
                continue
            row.update(_lab_row(study, entry, sidecar))
            gone = missing_weights(study.runs / entry.id)
            if gone:  # the accuracies are in run.json; confidence and entropy need the weights
                log.warning(f"{gone}; its mean confidence and entropy are left empty")
                rows.append(row)
                continue
            model = create_model(f"file:{study.runs / entry.id / MODEL_FILE}", arch=sidecar["arch"],
                                 num_classes=len(sidecar["data"]["classes"]))
        else:
            assert entry.spec is not None
            file = Path(entry.spec[5:]) if entry.spec.startswith("file:") else None
            if file is not None and not file.is_file():
                continue  # a trajectory checkpoint of a run not trained yet
            if unfinished_run(study, entry.spec) is not None:
                continue  # ... or of a lab run still training: its numbers come with the finished run
            model = create_model(entry.spec, **entry.spec_options())
            row.update((_snapshot_row(file) if file is not None else None) or {})
            if row.get("method") is not None:  # a snapshot: the variant of the run it comes from
                row["variant"] = variants.get(file.parent.name if file is not None else "")
            if row.get("clean_test_acc") is None:
                key = entry.input_size or model.input_size or 32
                if key not in test_cache:
                    test_cache[key] = load_data(data_path, input_size=key, samples=None, seed=study.seed,
                                                split=split, progress=progress)
                row["clean_test_acc"] = round(accuracy(model.model, test_cache[key]), 3)
                row["test_images"] = len(test_cache[key])
        size = entry.input_size or model.input_size or 32
        if size not in eval_cache:  # the same draw for every model of a resolution: decoded once
            eval_cache[size] = load_data(data_path, input_size=size, samples=study.samples, seed=study.seed,
                                         split=split, progress=progress)
        data = eval_cache[size]
        stats = confidence(model.model, data)
        row.update(eval_top1_acc=round(stats["top1_acc"], 3), mean_confidence=round(stats["mean_confidence"], 5),
                   mean_entropy=round(stats["mean_entropy"], 5), eval_images=len(data))
        rows.append(row)
    if not rows:
        raise LayercritError(f"{path}: no trained or given model found yet: run `layercrit study run` first")
    return pd.DataFrame(rows, columns=COLUMNS).astype({"seed": "Int64", "epoch": "Int64", "final_epoch": "Int64"})
