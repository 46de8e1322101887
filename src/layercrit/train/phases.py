"""Training phases: objects that run their own epochs on a :class:`~layercrit.train.run.TrainingRun`.

``SupervisedPhase``   SGD over augmented batches; the recipe's ``step`` gives the loss (cross-entropy,
                      adversarial, ...); updates the EMA where the recipe keeps one.
``ContrastivePhase``  SGD of the backbone (all but ``fc``) and a projection head on several views
                      per image (SimCLR); the classifier it stands for is a linear probe on top.
``ProbePhase``        a linear classifier ``fc`` on frozen features, trained with Adam; optionally
                      re-estimates BatchNorm statistics first (the frozen-random control).

Every phase reports each finished epoch to the run (``run.end_epoch``), which checkpoints it, so
a run resumes after its last finished epoch. Randomness per epoch comes only from (seed, epoch).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, cast

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import LayercritError
from ..models import NormalizedModel, build_seeded
from . import data as tdata
from .config import TrainConfig

Step = Callable[["Context", torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor | None]"]


@dataclass
class Context:
    """What a recipe's step sees."""

    cfg: TrainConfig
    model: NormalizedModel           # [0, 1] input, train mode, channels_last
    num_classes: int
    mix: Any = None                  # batch MixUp/CutMix transform or None
    head: nn.Module | None = None    # contrastive projection head


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch + 1


def main_epochs(cfg: TrainConfig) -> int:
    return cfg.epochs


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


def steps_per_epoch(n: int, batch_size: int) -> int:
    return n // batch_size if n > batch_size else 1


def backbone(net: nn.Module) -> nn.ModuleList:
    """Every child of ``net`` but its classifier ``fc``."""
    return nn.ModuleList([m for name, m in net.named_children() if name != "fc"])


def _bar(run, total: int, initial: int, desc: str):
    return tqdm(total=total, initial=initial, unit="step", desc=desc, disable=not run.progress, dynamic_ncols=True)


@dataclass
class SupervisedPhase:
    """SGD + momentum over augmented training batches; ``step(ctx, x_uint8, y) -> (loss, logits)``."""

    name: str
    step: Step
    epochs: Callable[[TrainConfig], int] = main_epochs
    views: int = 1                   # augmented views per image
    transform: Callable[[TrainConfig], Any] | None = None  # default: data.train_transform(cfg.augment)
    needs_fc = False                 # a Linear ``fc`` classifier the phase treats apart
    updates_ema = True

    def setup(self, run) -> None:
        """Build what the phase adds to the run (before a resume loads its state)."""

    def trained_modules(self, run) -> list[nn.Module]:
        return [run.model.model]

    def classifier(self, run, epoch: int) -> NormalizedModel:
        """The classifier this phase stands for after ``epoch`` (written at a snapshot epoch)."""
        return run.final_model()

    def run(self, run, start: int, end: int, stop: int | None) -> None:
        cfg = run.cfg
        opt = run.optimizer_for(self, param_groups(self.trained_modules(run), cfg.weight_decay,
                                                   cfg.no_decay_norm_bias),
                                lambda g: torch.optim.SGD(g, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov))
        base_lrs = [cfg.lr for _ in opt.param_groups]
        transform = self.transform(cfg) if self.transform else tdata.train_transform(cfg.augment)
        per_epoch = steps_per_epoch(len(run.train_data), cfg.batch_size)
        total, warmup = (end - start) * per_epoch, round(cfg.warmup_epochs * per_epoch)
        ctx = Context(cfg, run.model, run.num_classes, head=run.head,
                      mix=tdata.mixup_cutmix(run.num_classes, cfg.mixup_alpha, cfg.cutmix_alpha))
        autocast = torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
        bar = _bar(run, total, (run.state["epoch"] - start) * per_epoch, f"{cfg.method} {self.name}")
        try:
            for epoch in range(run.state["epoch"], min(end, stop if stop is not None else end)):
                torch.manual_seed(epoch_seed(cfg.seed, epoch))
                loader = tdata.train_loader(run.train_data, transform, batch_size=cfg.batch_size, seed=cfg.seed,
                                            epoch=epoch, views=self.views)
                run.model.train()
                if run.head is not None:
                    run.head.train()
                t0, loss_sum, correct, seen = time.perf_counter(), 0.0, 0, 0
                for i, (x, y) in enumerate(loader):
                    if i >= per_epoch:
                        break
                    step = (epoch - start) * per_epoch + i
                    for g, lr in zip(opt.param_groups, base_lrs):
                        g["lr"] = lr * lr_factor(step, total, warmup, cfg.schedule)
                    with autocast:
                        loss, logits = self.step(ctx, x, y)
                    value = loss.item()
                    if not math.isfinite(value):
                        raise LayercritError(
                            f"{cfg.method}: the training loss became {value} at epoch {epoch + 1}, step {i + 1}: "
                            f"lower lr (now {cfg.lr:g}) or check the data; {run.out} keeps the last finished epoch")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    if run.ema is not None and self.updates_ema:
                        run.ema.update_parameters(run.model)
                    n = y.shape[0]
                    seen += n
                    loss_sum += value * n
                    if logits is not None:
                        correct += (logits.argmax(1) == y).sum().item()
                    bar.update(1)
                    bar.set_postfix(epoch=f"{epoch + 1}/{run.total_epochs}", loss=f"{loss_sum / seen:.3f}",
                                    acc=f"{100 * correct / seen:.1f}" if logits is not None else "-")
                run.end_epoch(self, epoch, seen * self.views, time.perf_counter() - t0, loss_sum / max(seen, 1),
                              100 * correct / seen if logits is not None and seen else None)
        finally:
            bar.close()


class ProjectionHead(nn.Sequential):
    def __init__(self, dim: int, out: int):
        super().__init__(nn.Linear(dim, dim), nn.BatchNorm1d(dim), nn.ReLU(inplace=True), nn.Linear(dim, out))


@dataclass
class ContrastivePhase(SupervisedPhase):
    """Self-supervised pre-training of the backbone with a projection head; ``step`` returns (loss, None).

    At a snapshot epoch the classifier it stands for is a copy of the network with a linear probe
    (``probe``'s settings) trained on its frozen features; the run itself goes on unchanged.
    """

    probe: ProbePhase | None = None
    needs_fc = True
    updates_ema = False

    def setup(self, run) -> None:
        dim, cfg = classifier(cast(nn.Module, run.model.model)).in_features, run.cfg
        run.head = build_seeded(lambda: ProjectionHead(dim, cfg.proj_dim), cfg.seed + 1)

    def trained_modules(self, run) -> list[nn.Module]:
        return [backbone(run.model.model), run.head]

    def classifier(self, run, epoch: int) -> NormalizedModel:
        model = copy.deepcopy(run.model)
        probe = self.probe or ProbePhase("probe")
        probe.fit(run, model, first_epoch=epoch, epochs=probe.epochs(run.cfg))
        return model.eval()


def probe_epochs(cfg: TrainConfig) -> int:
    return cfg.probe_epochs


@dataclass
class ProbePhase:
    """A linear probe: frozen backbone (eval mode), features computed once, ``fc`` trained with Adam."""

    name: str
    epochs: Callable[[TrainConfig], int] = probe_epochs
    calibrate_bn: bool = False       # re-estimate BatchNorm statistics on training images first
    calibration_images: int = 2000
    needs_fc = True

    def setup(self, run) -> None:
        pass

    def classifier(self, run, epoch: int) -> NormalizedModel:
        return run.final_model()

    def run(self, run, start: int, end: int, stop: int | None) -> None:
        t0 = time.perf_counter()
        if self.calibrate_bn and run.state["epoch"] == start:
            self._calibrate_bn(run)
        feats, labels = self._features(run, run.model)
        feat_seconds = time.perf_counter() - t0
        net = cast(nn.Module, run.model.model)
        opt = run.optimizer_for(self, [{"params": list(classifier(net).parameters())}],
                                lambda g: torch.optim.Adam(g, lr=run.cfg.probe_lr))
        bar = _bar(run, (end - start) * self._per_epoch(run, labels),
                   (run.state["epoch"] - start) * self._per_epoch(run, labels), f"{run.cfg.method} {self.name}")
        first = run.state["epoch"]
        try:
            for epoch in range(first, min(end, stop if stop is not None else end)):
                t1 = time.perf_counter()
                loss, acc = self._epoch(run, net, opt, feats, labels, epoch, start, end, bar)
                extra = feat_seconds if epoch == first else 0.0  # the feature pass counts once per session
                run.end_epoch(self, epoch, len(labels), time.perf_counter() - t1 + extra, loss, acc)
        finally:
            bar.close()

    def fit(self, run, model: NormalizedModel, *, first_epoch: int, epochs: int) -> None:
        """Train ``model``'s ``fc`` on its frozen features for ``epochs`` epochs (no checkpoints)."""
        feats, labels = self._features(run, model)
        net = model.model
        opt = torch.optim.Adam(classifier(net).parameters(), lr=run.cfg.probe_lr)
        for epoch in range(first_epoch, first_epoch + epochs):
            self._epoch(run, net, opt, feats, labels, epoch, first_epoch, first_epoch + epochs, None)

    @staticmethod
    def _per_epoch(run, labels: torch.Tensor) -> int:
        return math.ceil(len(labels) / max(run.cfg.batch_size, 256))

    def _epoch(self, run, net: nn.Module, opt, feats, labels, epoch: int, start: int, end: int, bar):
        cfg = run.cfg
        bs, per_epoch = max(cfg.batch_size, 256), self._per_epoch(run, labels)
        total = (end - start) * per_epoch
        gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
        order = torch.randperm(len(labels), generator=gen)
        loss_sum, correct = 0.0, 0
        fc = classifier(net)
        for p in net.parameters():
            p.requires_grad_(p is fc.weight or p is fc.bias)
        try:
            for i in range(per_epoch):
                idx = order[i * bs:(i + 1) * bs]
                for g in opt.param_groups:
                    g["lr"] = cfg.probe_lr * lr_factor((epoch - start) * per_epoch + i, total, 0, "cosine")
                logits = fc(feats[idx])
                loss = F.cross_entropy(logits, labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.item() * len(idx)
                correct += (logits.argmax(1) == labels[idx]).sum().item()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=f"{epoch + 1}/{run.total_epochs}", loss=f"{loss_sum / len(labels):.3f}")
        finally:
            for p in net.parameters():
                p.requires_grad_(True)
        return loss_sum / len(labels), 100 * correct / len(labels)

    @torch.no_grad()
    def _calibrate_bn(self, run) -> None:
        """Re-estimate BatchNorm running statistics (a cumulative average) on training images."""
        net = run.model.model
        norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        run.model.train()
        n = min(self.calibration_images, len(run.train_data))
        for s in range(0, n, 250):
            run.model(tdata.to_float(run.train_data.images[s:min(n, s + 250)]))
        for m in norms:
            m.momentum = 0.1
        run.model.eval()

    @torch.no_grad()
    def _features(self, run, model: NormalizedModel) -> tuple[torch.Tensor, torch.Tensor]:
        model.eval()
        chunks = []
        images = run.train_data.images
        for s in tqdm(range(0, len(images), 256), desc="probe features", unit="batch", leave=False,
                      disable=not run.progress):
            chunks.append(features(model, tdata.to_float(images[s:s + 256])).float())
        return torch.cat(chunks), run.train_data.labels


def classifier(net: nn.Module) -> nn.Linear:
    """The network's ``fc`` (checked when the run starts)."""
    return cast(nn.Linear, net.fc)


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the classifier ``fc`` (penultimate features) for [0, 1] images ``x``."""
    net = model.model if isinstance(model, NormalizedModel) else model
    captured: list[torch.Tensor] = []
    handle = classifier(net).register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        model(x)
    finally:
        handle.remove()
    return captured[0]
