"""A training run's lifecycle: build, resume, run the recipe's phases, snapshot, evaluate, write the sidecar.

Everything a run writes goes into its ``out`` folder:

- ``init.safetensors``    the network at epoch 0 (for ``--reset init:``), written before training;
- ``epoch-N.safetensors`` the classifier after epoch N, for each N in ``save_epochs`` (trajectories;
                          a contrastive phase's is a copy with a linear probe trained on its features);
- ``model.safetensors``   the final network (the EMA where the recipe keeps one), loadable as
                          ``file:<out>/model.safetensors`` (self-describing: arch, classes, normalization);
- ``run.json``            the sidecar: method, every hyperparameter, seed, data fingerprints, epochs,
                          images seen, wall time, clean (and robust) test accuracy, versions, git commit.
                          Written last: its presence means the run is complete.
- ``resume.pt``           after each epoch: model / optimizer / EMA / head tensors plus the loop's state
                          as JSON text, saved atomically and read back with ``torch.load(weights_only=True)``
                          (no arbitrary pickles); deleted when the run completes.

Randomness: the network is built from ``seed``; each epoch reseeds torch's RNG and its loader's
shuffling from (seed, epoch), so an interrupted run resumed from its last epoch ends with exactly
the weights of an uninterrupted one (on the CPU, same thread count). ``train`` restores the
caller's RNG state and thread count when it returns.
"""
from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn as nn

from ..accuracy import accuracy, robust_accuracy
from ..errors import ConfigError, LayercritError
from ..paths import exclusive_lock, os_error
from ..models import NormalizedModel, build_seeded, get_arch, save_safetensors, weights_checksum
from ..models.checkpoint import describe_weights, load_into, load_state_dict
from ..provenance import git_commit, package_versions
from ..threads import torch_threads
from . import data as tdata
from .config import TrainConfig
from .registry import Recipe, get_recipe

INIT_FILE, MODEL_FILE, SIDECAR_FILE, RESUME_FILE = "init.safetensors", "model.safetensors", "run.json", "resume.pt"


def snapshot_file(epoch: int) -> str:
    return f"epoch-{epoch}.safetensors"


def read_sidecar(out: str | Path) -> dict | None:
    path = Path(out) / SIDECAR_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise LayercritError(f"{path} is not valid JSON: delete the folder {out} to train again") from None


def train(method: str, data: str | Path, out: str | Path, *, progress: bool = True, threads: int | None = None,
          stop_after_epoch: int | None = None, **hyperparameters) -> dict:
    """Train one model with ``method`` on CIFAR-10-like ``data`` into ``out``; return the sidecar dict.

    A completed run in ``out`` with the same configuration is returned as it is; an interrupted one
    resumes after its last completed epoch. ``stop_after_epoch`` stops after that many epochs (counted
    over all phases) as an interruption would (a test hook; the next call resumes).
    """
    recipe = get_recipe(method)
    cfg = recipe.config(**hyperparameters)
    if cfg.precision != "fp32":  # bf16 without AMX / AVX512-BF16 is emulated: ~8x slower than fp32 (an AVX2 EPYC)
        from ..engine.hardware import warn_if_slow

        warn_if_slow(cfg.precision, "cpu")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{{out}} {out} is a file, not a folder: give a folder for the run's files")
    done = read_sidecar(out)
    if done is not None:
        return _same_settings(done, cfg, out)
    first_new = out  # the outermost folder this call creates, removed again if nothing is written into it
    while not first_new.parent.exists() and first_new.parent != first_new:
        first_new = first_new.parent
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise os_error(e, out, "create the run folder") from None
    try:
        # one process per run folder: a second one (another `study run`) gets BusyError before it loads anything
        with torch_threads(threads), exclusive_lock(out, "run folder"), torch.random.fork_rng(devices=[]):
            done = read_sidecar(out)  # finished by the process that held the lock before us
            if done is not None:
                return _same_settings(done, cfg, out)
            return TrainingRun(cfg, recipe, Path(data), out, progress).run(stop_after_epoch)
    finally:
        if created:  # bad input (a missing data folder, ...) leaves nothing behind
            _remove_empty(out, first_new)


def _remove_empty(folder: Path, up_to: Path) -> None:
    """Remove ``folder`` and its parents up to ``up_to`` for as long as they are empty."""
    while folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        if folder == up_to:
            break
        folder = folder.parent


def _same_settings(done: dict, cfg: TrainConfig, out: Path) -> dict:
    """A finished run's sidecar, where it was trained with ``cfg``'s settings (its weights may be missing: a
    clone that kept only run.json still has its accuracies; :func:`missing_weights` says so where they are read)."""
    if not cfg.same_as(done.get("hyperparameters") or {}):
        raise ConfigError(f"{out} holds a finished {done.get('method')} run with other settings: "
                          "use another {out}, or delete that folder to retrain")
    return done


def missing_weights(out: str | Path) -> str | None:
    """Why a finished run's weights cannot be read (None: they are there): a clone of a repository that kept
    run.json but not model.safetensors, or a deleted file."""
    out = Path(out)
    if (out / MODEL_FILE).is_file():
        return None
    method = (read_sidecar(out) or {}).get("method", "training")
    return (f"{out} holds a finished {method} run ({SIDECAR_FILE}) without its weights {MODEL_FILE} (not "
            f"committed, or deleted): restore the file, or delete {out} to train it again")


class TrainingRun:
    """One run: the network, its data and state; phases call back ``optimizer_for`` and ``end_epoch``."""

    def __init__(self, cfg: TrainConfig, recipe: Recipe, data_root: Path, out: Path, progress: bool):
        self.cfg, self.recipe, self.out, self.progress = cfg, recipe, out, bool(progress)
        self.device = torch.device("cpu")
        self.train_data = tdata.load_split(data_root, "train", samples=cfg.train_samples or None, seed=cfg.seed,
                                           progress=progress)
        self.test_data = tdata.load_split(data_root, "test", samples=cfg.eval_samples or None, seed=cfg.seed,
                                          progress=progress)
        self.data_root = data_root
        arch = get_arch(cfg.arch)
        self.num_classes = self.train_data.num_classes
        net = build_seeded(lambda: arch.build(num_classes=self.num_classes), cfg.seed)
        if cfg.init_from:  # fine-tuning: start from given weights instead of the seeded initialization
            load_into(net, load_state_dict(cfg.init_from), cfg.init_from)
        if not isinstance(getattr(net, "fc", None), nn.Linear) and any(p.needs_fc for p in recipe.phases):
            raise LayercritError(f"{cfg.method} needs an architecture whose classifier is a Linear `fc` "
                                 f"(e.g. cifar_resnet50); {cfg.arch} has none")
        self.model = NormalizedModel(net, arch.mean, arch.std).to(memory_format=torch.channels_last)
        self.head: nn.Module | None = None
        for phase in recipe.phases:
            phase.setup(self)
        self.ema = None
        if cfg.ema_decay > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        self.epochs = [p.epochs(cfg) for p in recipe.phases]
        self.total_epochs = sum(self.epochs)
        late = [e for e in cfg.save_epochs if e > self.total_epochs]
        if late:
            raise LayercritError(f"save_epochs {late} lie beyond the run's {self.total_epochs} epochs")
        self.state: dict[str, Any] = {"epoch": 0, "images_seen": 0, "elapsed": 0.0, "history": []}
        self.optimizer: torch.optim.Optimizer | None = None
        self.opt_phase: str | None = None
        self._saved_opt: tuple[str | None, dict | None] = (None, None)

    # --- the phases ---------------------------------------------------------------------------
    def run(self, stop_after_epoch: int | None) -> dict:
        self._resume()
        if self.state["epoch"] == 0:  # provenance of the start, kept across resumes (claims check it: pre-registered?)
            self.state["started_at"] = utc_now()
            self.state["start_git_commit"] = git_commit()
        start = 0
        for phase, n in zip(self.recipe.phases, self.epochs):
            end = start + n
            if self.state["epoch"] < end:
                phase.run(self, start, end, stop_after_epoch)
                if stop_after_epoch is not None and stop_after_epoch <= self.state["epoch"] < self.total_epochs:
                    return {"interrupted_after_epoch": self.state["epoch"]}
            start = end
        return self._finish()

    def optimizer_for(self, phase, params: list[dict], make) -> torch.optim.Optimizer:
        """``make(params)``, with the state saved for ``phase`` when resuming inside it."""
        opt = make(params)
        saved_phase, saved = self._saved_opt
        if saved is not None and saved_phase == phase.name:
            opt.load_state_dict(saved)
        self.optimizer, self.opt_phase = opt, phase.name
        return opt

    def final_model(self) -> NormalizedModel:
        return cast(NormalizedModel, self.ema.module) if self.ema is not None else self.model

    def end_epoch(self, phase, epoch: int, images: int, seconds: float, loss: float, acc: float | None) -> None:
        self.state["epoch"] = epoch + 1
        self.state["images_seen"] += images
        self.state["elapsed"] += seconds
        entry = {"epoch": epoch + 1, "phase": phase.name, "loss": round(loss, 5),
                 "train_acc": None if acc is None else round(acc, 3),
                 "seconds": round(seconds, 2), "images_per_s": round(images / seconds, 1)}
        if epoch + 1 in self.cfg.save_epochs and epoch + 1 < self.total_epochs:
            entry["snapshot"] = self._snapshot(phase, epoch + 1)
        self.state["history"].append(entry)
        self._checkpoint()

    def _snapshot(self, phase, epoch: int) -> dict:
        """Write the classifier after ``epoch`` (before the checkpoint: a resume redoes both)."""
        with torch.random.fork_rng(devices=[]):  # the run's own randomness stays as without snapshots
            model = phase.classifier(self, epoch)
            clean = accuracy(model, self.test_data)
            save_safetensors(model.model, self.out / snapshot_file(epoch),
                             metadata={"method": self.cfg.method, "epoch": str(epoch), **self._arch_metadata()})
        self.model.train()
        return {"file": snapshot_file(epoch), "clean_test_acc": round(clean, 3),
                "weights_sha256": weights_checksum(model.model)}

    # --- checkpoint / resume -------------------------------------------------------------------
    def _resume(self) -> None:
        path = self.out / RESUME_FILE
        init = self.out / INIT_FILE
        if not path.is_file():
            if init.is_file() and weights_checksum_file(init) != weights_checksum(self.model.model):
                raise ConfigError(f"{init} is not this run's initialization: use another {{out}} or empty it")
            save_safetensors(self.model.model, init, metadata={"method": self.cfg.method, "epoch": "0",
                                                               **self._arch_metadata()})
            return
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            meta = json.loads(ckpt["meta"])
        except Exception as e:
            raise LayercritError(f"{path} is unreadable ({type(e).__name__}): delete it to restart the run") from None
        if not self.cfg.same_as(meta["config"]):
            diff = sorted(k for k in meta["config"] if meta["config"][k] != self.cfg.to_dict().get(k))
            raise ConfigError(f"{self.out} holds an interrupted run with other settings ({', '.join(diff)}): "
                              "use the same settings to resume, another {out}, or delete the folder")
        self.model.load_state_dict(ckpt["model"])
        if self.head is not None and "head" in ckpt:
            self.head.load_state_dict(ckpt["head"])
        if self.ema is not None and "ema" in ckpt:
            self.ema.load_state_dict(ckpt["ema"])
        self.state = meta["state"]
        self._saved_opt = (meta.get("opt_phase"), ckpt.get("optimizer"))
        if self.progress:
            from tqdm.auto import tqdm

            tqdm.write(f"resuming {self.cfg.method} in {self.out} after epoch {self.state['epoch']}")

    def _checkpoint(self) -> None:
        ckpt: dict[str, Any] = {"model": self.model.state_dict(), "meta": json.dumps(
            {"config": self.cfg.to_dict(), "state": self.state, "opt_phase": self.opt_phase})}
        if self.optimizer is not None:
            ckpt["optimizer"] = self.optimizer.state_dict()
        if self.head is not None:
            ckpt["head"] = self.head.state_dict()
        if self.ema is not None:
            ckpt["ema"] = self.ema.state_dict()
        tmp = self.out / (RESUME_FILE + ".tmp")
        torch.save(ckpt, tmp)
        os.replace(tmp, self.out / RESUME_FILE)

    # --- evaluation and outputs ------------------------------------------------------------------
    def _arch_metadata(self) -> dict[str, str]:
        """Makes the weights self-describing: ``file:model.safetensors`` loads without --arch."""
        arch = get_arch(self.cfg.arch)
        return describe_weights(self.cfg.arch, self.num_classes, arch.mean, arch.std)

    def _finish(self) -> dict:
        cfg = self.cfg
        model = self.final_model().eval()
        t0 = time.perf_counter()
        clean = accuracy(model, self.test_data)
        sidecar: dict[str, Any] = {
            "method": cfg.method,
            "summary": self.recipe.summary,
            "arch": cfg.arch,
            "seed": cfg.seed,
            "hyperparameters": cfg.to_dict(),
            "phases": [{"name": p.name, "kind": type(p).__name__, "epochs": n}
                       for p, n in zip(self.recipe.phases, self.epochs)],
            "epochs": self.state["epoch"],
            "images_seen": self.state["images_seen"],
            "train_seconds": round(self.state["elapsed"], 1),
            "images_per_second": round(self.state["images_seen"] / max(self.state["elapsed"], 1e-9), 1),
            "data": {"root": str(self.data_root.resolve()), "train_fingerprint": self.train_data.fingerprint,
                     "train_images": len(self.train_data), "test_fingerprint": self.test_data.fingerprint,
                     "test_images": len(self.test_data), "classes": self.train_data.classes},
            "clean_test_acc": round(clean, 3),
        }
        if self.recipe.adversarial:
            sub = self.test_data
            if cfg.robust_eval_samples and cfg.robust_eval_samples < len(sub):
                sub = sub.subset(cfg.robust_eval_samples, cfg.seed)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                robust = robust_accuracy(model, sub, norm=cfg.norm, eps=cfg.eps, steps=cfg.robust_eval_steps)
            sidecar["robust_test_acc"] = round(robust, 3)
            sidecar["robust_eval"] = {"attack": f"PGD-{cfg.robust_eval_steps} {cfg.norm}, random start",
                                      "eps": cfg.eps, "step_size": 2.5 * cfg.eps / cfg.robust_eval_steps,
                                      "images": len(sub)}
        sidecar["eval_seconds"] = round(time.perf_counter() - t0, 1)
        sidecar["weights_sha256"] = weights_checksum(model.model)
        sidecar["history"] = self.state["history"]
        sidecar["snapshots"] = [h["snapshot"] | {"epoch": h["epoch"]} for h in self.state["history"]
                                if "snapshot" in h]
        sidecar["versions"] = package_versions()
        sidecar["git_commit"] = git_commit()
        # when the run began, and from which commit (absent for runs that began before this was recorded)
        sidecar["started_at"] = self.state.get("started_at")
        sidecar["start_git_commit"] = self.state.get("start_git_commit")
        sidecar["finished_at"] = utc_now()
        sidecar["torch_threads"] = torch.get_num_threads()
        sidecar["files"] = {"model": MODEL_FILE, "init": INIT_FILE}
        save_safetensors(model.model, self.out / MODEL_FILE,
                         metadata={"method": cfg.method, "epoch": str(self.state["epoch"]), **self._arch_metadata()})
        tmp = self.out / (SIDECAR_FILE + ".tmp")
        tmp.write_text(json.dumps(sidecar, indent=2) + "\n")
        os.replace(tmp, self.out / SIDECAR_FILE)
        (self.out / RESUME_FILE).unlink(missing_ok=True)
        return sidecar


def utc_now() -> str:
    """The current time, UTC, to the second, in ISO 8601 ("2026-12-07T01:15:00+00:00")."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def weights_checksum_file(path: Path) -> str:
    from safetensors.torch import load_file

    class _Holder(nn.Module):
        def __init__(self, state):
            super().__init__()
            self._state = state

        def state_dict(self, *a, **k):
            return self._state

    return weights_checksum(_Holder(load_file(str(path))))
