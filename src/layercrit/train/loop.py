"""The shared training loop: phases and epochs, checkpoint/resume, evaluation and the sidecar JSON.

Everything a run writes goes into its ``out`` folder:

- ``init.safetensors``   the network at epoch 0 (for ``--reset init:``), written before training;
- ``model.safetensors``  the final network (the EMA where the recipe keeps one), loadable as
                         ``file:<out>/model.safetensors --arch <arch>``;
- ``run.json``           the sidecar: method, every hyperparameter, seed, data fingerprints, epochs,
                         images seen, wall time, clean (and robust) test accuracy, versions, git commit.
                         Written last: its presence means the run is complete.
- ``resume.pt``          after each epoch: model / optimizer / EMA / head tensors plus the loop's state
                         as JSON text, saved atomically and read back with ``torch.load(weights_only=True)``
                         (no arbitrary pickles); deleted when the run completes.

Randomness: the network is built from ``seed``; each epoch reseeds torch's RNG and its loader's
shuffling from (seed, epoch), so an interrupted run resumed from its last epoch ends with exactly
the weights of an uninterrupted one (on the CPU, same thread count).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import LayercritError
from ..models import NormalizedModel, build_seeded, get_arch, save_safetensors, weights_checksum
from ..models.checkpoint import describe_weights, load_into, load_state_dict
from . import data as tdata
from .recipes import Phase, Recipe, TrainConfig, get_recipe, make_config

INIT_FILE, MODEL_FILE, SIDECAR_FILE, RESUME_FILE = "init.safetensors", "model.safetensors", "run.json", "resume.pt"


@dataclass
class Context:
    """What a recipe's step sees."""

    cfg: TrainConfig
    model: NormalizedModel           # [0, 1] input, train mode, channels_last
    num_classes: int
    mix: Any = None                  # batch MixUp/CutMix transform or None
    head: nn.Module | None = None    # SimCLR projection head


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch + 1


def param_groups(modules: list[nn.Module], weight_decay: float, no_decay_norm_bias: bool) -> list[dict]:
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    if not no_decay_norm_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.ndim > 1]
    rest = [p for p in params if p.ndim <= 1]  # BatchNorm weights/biases and all biases
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "step":
        return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    return 0.5 * (1 + math.cos(math.pi * progress))


def _steps_per_epoch(n: int, batch_size: int) -> int:
    return n // batch_size if n > batch_size else 1


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_json(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_sidecar(out: str | Path) -> dict | None:
    path = Path(out) / SIDECAR_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise LayercritError(f"{path} is not valid JSON: delete the folder {out} to train again") from None


def train(method: str, data: str | Path, out: str | Path, *, progress: bool = True, threads: int | None = None,
          stop_after_epoch: int | None = None, **hyperparameters) -> dict:
    """Train one model with ``method`` on CIFAR-10-like ``data`` into ``out``; return the sidecar dict.

    A completed run in ``out`` with the same configuration is returned as it is; an interrupted one
    resumes after its last completed epoch. ``stop_after_epoch`` stops after that many epochs (counted
    over all phases) as an interruption would (a test hook; the next call resumes).
    """
    cfg = make_config(method, **hyperparameters)
    recipe = get_recipe(method)
    out = Path(out)
    done = read_sidecar(out)
    if done is not None:
        if not cfg.same_as(done.get("hyperparameters") or {}):
            raise LayercritError(f"{out} holds a finished {done.get('method')} run with other settings: "
                                 "use another --out, or delete that folder to retrain")
        return done
    if threads:
        torch.set_num_threads(threads)
    return _Run(cfg, recipe, Path(data), out, progress).run(stop_after_epoch)


class _Run:
    def __init__(self, cfg: TrainConfig, recipe: Recipe, data_root: Path, out: Path, progress: bool):
        self.cfg, self.recipe, self.out, self.progress = cfg, recipe, out, progress
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
        if not isinstance(getattr(net, "fc", None), nn.Linear) and any(p.kind != "supervised" for p in recipe.phases):
            raise LayercritError(f"{cfg.method} needs an architecture whose classifier is a Linear `fc` "
                                 f"(e.g. cifar_resnet50); {cfg.arch} has none")
        self.model = NormalizedModel(net, arch.mean, arch.std).to(memory_format=torch.channels_last)
        self.head = None
        if any(p.kind == "ssl" for p in recipe.phases):
            from .simclr import ProjectionHead

            dim = net.fc.in_features
            self.head = build_seeded(lambda: ProjectionHead(dim, cfg.proj_dim), cfg.seed + 1)
        self.ema = None
        if cfg.ema_decay > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        self.epochs = [p.epochs(cfg) for p in recipe.phases]
        self.total_epochs = sum(self.epochs)
        self.state = {"epoch": 0, "images_seen": 0, "elapsed": 0.0, "history": []}
        self.optimizer, self.opt_phase = None, None

    # --- checkpoint / resume -------------------------------------------------------------
    def _resume(self) -> None:
        path = self.out / RESUME_FILE
        init = self.out / INIT_FILE
        if not path.is_file():
            if init.is_file() and weights_checksum_file(init) != weights_checksum(self.model.model):
                raise LayercritError(f"{init} is not this run's initialization: use another --out or empty it")
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
            raise LayercritError(f"{self.out} holds an interrupted run with other settings ({', '.join(diff)}): "
                                 "use the same settings to resume, another --out, or delete the folder")
        self.model.load_state_dict(ckpt["model"])
        if self.head is not None and "head" in ckpt:
            self.head.load_state_dict(ckpt["head"])
        if self.ema is not None and "ema" in ckpt:
            self.ema.load_state_dict(ckpt["ema"])
        self.state = meta["state"]
        self._saved_opt = (meta.get("opt_phase"), ckpt.get("optimizer"))
        if progress_enabled(self.progress):
            tqdm.write(f"resuming {self.cfg.method} in {self.out} after epoch {self.state['epoch']}")

    def _checkpoint(self) -> None:
        ckpt = {"model": self.model.state_dict(),
                "meta": json.dumps({"config": self.cfg.to_dict(), "state": self.state, "opt_phase": self.opt_phase})}
        if self.optimizer is not None:
            ckpt["optimizer"] = self.optimizer.state_dict()
        if self.head is not None:
            ckpt["head"] = self.head.state_dict()
        if self.ema is not None:
            ckpt["ema"] = self.ema.state_dict()
        _save_atomic(ckpt, self.out / RESUME_FILE)

    # --- phases ----------------------------------------------------------------------------
    def run(self, stop_after_epoch: int | None) -> dict:
        self._saved_opt = (None, None)
        self.out.mkdir(parents=True, exist_ok=True)  # only now: bad input leaves nothing behind
        self._resume()
        start = 0
        for phase, n in zip(self.recipe.phases, self.epochs):
            end = start + n
            if self.state["epoch"] < end:
                if phase.kind == "probe":
                    self._probe(phase, start, end, stop_after_epoch)
                else:
                    self._train_phase(phase, start, end, stop_after_epoch)
                if stop_after_epoch is not None and self.state["epoch"] >= stop_after_epoch \
                        and self.state["epoch"] < self.total_epochs:
                    return {"interrupted_after_epoch": self.state["epoch"]}
            start = end
        return self._finish()

    def _optimizer(self, phase: Phase, params: list[dict], make) -> torch.optim.Optimizer:
        opt = make(params)
        saved_phase, saved = self._saved_opt
        if saved is not None and saved_phase == phase.name:
            opt.load_state_dict(saved)
        self.optimizer, self.opt_phase = opt, phase.name
        return opt

    def _train_phase(self, phase: Phase, start: int, end: int, stop: int | None) -> None:
        cfg = self.cfg
        modules = [self.model.model] if phase.kind == "supervised" else [self.backbone_modules(), self.head]
        opt = self._optimizer(phase, param_groups(modules, cfg.weight_decay, cfg.no_decay_norm_bias),
                              lambda g: torch.optim.SGD(g, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov))
        base_lrs = [cfg.lr for _ in opt.param_groups]
        transform = phase.transform(cfg) if phase.transform else tdata.train_transform(cfg.augment)
        per_epoch = _steps_per_epoch(len(self.train_data), cfg.batch_size)
        total, warmup = (end - start) * per_epoch, round(cfg.warmup_epochs * per_epoch)
        ctx = Context(cfg, self.model, self.num_classes, head=self.head,
                      mix=tdata.mixup_cutmix(self.num_classes, cfg.mixup_alpha, cfg.cutmix_alpha))
        bar = tqdm(total=total, initial=(self.state["epoch"] - start) * per_epoch, unit="step",
                   desc=f"{cfg.method} {phase.name}", disable=not progress_enabled(self.progress), dynamic_ncols=True)
        try:
            for epoch in range(self.state["epoch"], min(end, stop if stop is not None else end)):
                torch.manual_seed(_epoch_seed(cfg.seed, epoch))
                loader = tdata.train_loader(self.train_data, transform, batch_size=cfg.batch_size, seed=cfg.seed,
                                            epoch=epoch, views=phase.views)
                self.model.train()
                if self.head is not None:
                    self.head.train()
                t0, loss_sum, correct, seen = time.perf_counter(), 0.0, 0, 0
                for i, (x, y) in enumerate(loader):
                    if i >= per_epoch:
                        break
                    step = (epoch - start) * per_epoch + i
                    for g, lr in zip(opt.param_groups, base_lrs):
                        g["lr"] = lr * lr_factor(step, total, warmup, cfg.schedule)
                    loss, logits = phase.step(ctx, x, y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    if self.ema is not None and phase.kind == "supervised":
                        self.ema.update_parameters(self.model)
                    n = y.shape[0]
                    seen += n
                    loss_sum += loss.item() * n
                    if logits is not None:
                        correct += (logits.argmax(1) == y).sum().item()
                    bar.update(1)
                    bar.set_postfix(epoch=f"{epoch + 1}/{self.total_epochs}", loss=f"{loss_sum / seen:.3f}",
                                    acc=f"{100 * correct / seen:.1f}" if logits is not None else "-")
                self._end_epoch(phase, epoch, seen * phase.views, time.perf_counter() - t0, loss_sum / max(seen, 1),
                                100 * correct / seen if logits is not None and seen else None)
        finally:
            bar.close()

    def backbone_modules(self) -> nn.Module:
        net = self.model.model
        keep = nn.ModuleList([m for name, m in net.named_children() if name != "fc"])
        return keep

    def _end_epoch(self, phase: Phase, epoch: int, images: int, seconds: float, loss: float, acc) -> None:
        self.state["epoch"] = epoch + 1
        self.state["images_seen"] += images
        self.state["elapsed"] += seconds
        self.state["history"].append({"epoch": epoch + 1, "phase": phase.name, "loss": round(loss, 5),
                                      "train_acc": None if acc is None else round(acc, 3),
                                      "seconds": round(seconds, 2), "images_per_s": round(images / seconds, 1)})
        self._checkpoint()

    def _probe(self, phase: Phase, start: int, end: int, stop: int | None) -> None:
        """Linear probe: frozen backbone (eval mode), features computed once, ``fc`` trained with Adam."""
        cfg, net = self.cfg, self.model.model
        t0 = time.perf_counter()
        if cfg.method == "frozen-random" and self.state["epoch"] == start:
            self._calibrate_bn()
        feats, labels = self._features()
        feat_seconds = time.perf_counter() - t0
        for p in net.parameters():
            p.requires_grad_(p is net.fc.weight or p is net.fc.bias)
        opt = self._optimizer(phase, [{"params": list(net.fc.parameters())}],
                              lambda g: torch.optim.Adam(g, lr=cfg.probe_lr))
        bs = max(cfg.batch_size, 256)
        per_epoch = math.ceil(len(labels) / bs)
        total = (end - start) * per_epoch
        bar = tqdm(total=total, initial=(self.state["epoch"] - start) * per_epoch, unit="step",
                   desc=f"{cfg.method} {phase.name}", disable=not progress_enabled(self.progress), dynamic_ncols=True)
        try:
            for epoch in range(self.state["epoch"], min(end, stop if stop is not None else end)):
                gen = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch))
                order = torch.randperm(len(labels), generator=gen)
                t1, loss_sum, correct = time.perf_counter(), 0.0, 0
                for i in range(per_epoch):
                    idx = order[i * bs:(i + 1) * bs]
                    for g in opt.param_groups:
                        g["lr"] = cfg.probe_lr * lr_factor((epoch - start) * per_epoch + i, total, 0, "cosine")
                    logits = net.fc(feats[idx])
                    loss = F.cross_entropy(logits, labels[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    loss_sum += loss.item() * len(idx)
                    correct += (logits.argmax(1) == labels[idx]).sum().item()
                    bar.update(1)
                    bar.set_postfix(epoch=f"{epoch + 1}/{self.total_epochs}", loss=f"{loss_sum / len(labels):.3f}")
                extra = feat_seconds if epoch == self.state["epoch"] else 0.0  # feature pass counts once per session
                self._end_epoch(phase, epoch, len(labels), time.perf_counter() - t1 + extra,
                                loss_sum / len(labels), 100 * correct / len(labels))
        finally:
            bar.close()
            for p in net.parameters():
                p.requires_grad_(True)

    @torch.no_grad()
    def _calibrate_bn(self, images: int = 2000) -> None:
        """Re-estimate BatchNorm running statistics (a cumulative average) on training images."""
        net = self.model.model
        norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        self.model.train()
        n = min(images, len(self.train_data))
        for s in range(0, n, 250):
            self.model(tdata.to_float(self.train_data.images[s:min(n, s + 250)]))
        for m in norms:
            m.momentum = 0.1
        self.model.eval()

    @torch.no_grad()
    def _features(self) -> tuple[torch.Tensor, torch.Tensor]:
        from .simclr import features

        self.model.eval()
        chunks = []
        images = self.train_data.images
        for s in tqdm(range(0, len(images), 256), desc="probe features", unit="batch", leave=False,
                      disable=not progress_enabled(self.progress)):
            chunks.append(features(self.model, tdata.to_float(images[s:s + 256])).float())
        return torch.cat(chunks), self.train_data.labels

    # --- evaluation and outputs ------------------------------------------------------------
    def _arch_metadata(self) -> dict[str, str]:
        """Makes the weights self-describing: ``file:model.safetensors`` loads without --arch."""
        arch = get_arch(self.cfg.arch)
        return describe_weights(self.cfg.arch, self.num_classes, arch.mean, arch.std)

    def _final_model(self) -> NormalizedModel:
        return self.ema.module if self.ema is not None else self.model

    def _finish(self) -> dict:
        from ..engine.measure import package_versions

        cfg = self.cfg
        model = self._final_model().eval()
        t0 = time.perf_counter()
        clean = accuracy(model, self.test_data)
        sidecar: dict[str, Any] = {
            "method": cfg.method,
            "summary": self.recipe.summary,
            "arch": cfg.arch,
            "seed": cfg.seed,
            "hyperparameters": cfg.to_dict(),
            "phases": [{"name": p.name, "kind": p.kind, "epochs": n} for p, n in zip(self.recipe.phases, self.epochs)],
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
        sidecar["versions"] = package_versions()
        sidecar["git_commit"] = git_commit()
        sidecar["torch_threads"] = torch.get_num_threads()
        sidecar["files"] = {"model": MODEL_FILE, "init": INIT_FILE}
        save_safetensors(model.model, self.out / MODEL_FILE,
                         metadata={"method": cfg.method, "epoch": str(self.state["epoch"]), **self._arch_metadata()})
        _write_json(sidecar, self.out / SIDECAR_FILE)
        (self.out / RESUME_FILE).unlink(missing_ok=True)
        return sidecar


def progress_enabled(progress: bool) -> bool:
    return bool(progress)


def weights_checksum_file(path: Path) -> str:
    from safetensors.torch import load_file

    class _Holder(nn.Module):
        def __init__(self, state):
            super().__init__()
            self._state = state

        def state_dict(self, *a, **k):
            return self._state

    return weights_checksum(_Holder(load_file(str(path))))


@torch.no_grad()
def accuracy(model: nn.Module, data, batch_size: int = 500) -> float:
    """Top-1 accuracy (%) of ``model`` on ``data``, on whatever device the model is."""
    model.eval()
    correct = 0
    for x, y in data.batches(batch_size, next(model.parameters()).device):
        correct += (model(x.contiguous(memory_format=torch.channels_last)).argmax(1) == y).sum().item()
    return 100.0 * correct / len(data)


def robust_accuracy(model: nn.Module, data, *, norm: str, eps: float, steps: int, batch_size: int = 250) -> float:
    from .adversarial import pgd

    model.eval()
    correct = 0
    for x, y in data.batches(batch_size):
        x_adv = pgd(model, x, y, norm=norm, eps=eps, steps=steps, step_size=2.5 * eps / steps)
        with torch.no_grad():
            correct += (model(x_adv).argmax(1) == y).sum().item()
    return 100.0 * correct / len(data)
