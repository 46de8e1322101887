"""Training data: CIFAR-10 decoded once into uint8 tensors, per-sample torchvision v2 augmentations.

``load_split`` reads ``<root>/train`` / ``<root>/test`` image folders (``../shared/data/cifar10``) or
CIFAR-10 in torchvision's format (a folder holding ``cifar-10-batches-py``) through
:func:`layercrit.load_data` (decoded once, cached in ``$LAYERCRIT_CACHE``), by the same folder and image
rules as every other command (``docs/data.md``: hidden folders are never classes, special files are
never opened, ...). ``train_loader`` yields
uint8 batches: each image goes through the recipe's v2 transform; batch-level MixUp/CutMix and
Gaussian noise act later, on float batches, in the recipe's step.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from ..data import EvalData, load_data
from ..data.folder import show
from ..errors import ConfigError, LayercritError
from .config import AUGMENTS


def load_split(root: str | Path, split: str, *, samples: int | None = None, seed: int = 0,
               progress: bool = True) -> EvalData:
    """The ``split`` ("train" or "test") of CIFAR-10-like data at ``root``; ``samples`` draws a subset."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"training data not found: {show(root)}: pass {{data}} pointing at CIFAR-10 "
                          "(a folder with train/ and test/ image folders, or with cifar-10-batches-py)", ("data",))
    kw: dict[str, Any] = {}
    if (root / split).is_dir():
        path = root / split
    elif (root / "cifar-10-batches-py").is_dir() or root.name == "cifar-10-batches-py":
        path, kw = root, {"split": split}
    else:
        raise ConfigError(f"{show(root)} has no {split}/ folder and no cifar-10-batches-py: pass the CIFAR-10 root "
                          "(holding train/ and test/), e.g. {data} ../shared/data/cifar10", ("data",))
    # num_workers=0: decoding 50,000 files through worker processes exhausts open file handles
    data = load_data(path, input_size=32, samples=None, seed=seed, num_workers=0, progress=progress, **kw)
    if data.images.dtype != torch.uint8 or data.images.shape[1:] != (3, 32, 32):
        raise LayercritError(f"{show(path)}: expected 32x32 RGB images, got {tuple(data.images.shape[1:])}")
    if samples is not None and samples > len(data):  # never silently fewer than asked for (issue 14)
        what = "eval_samples" if split == "test" else "train_samples"
        raise ConfigError(f"{{{what}}} {samples} is more than the {len(data)} {split} images in {show(path)}: "
                          f"use {{{what}}} {len(data)} or fewer (0: all)", (what,))
    if samples is not None and samples < len(data):
        data = data.subset(samples, seed)
    return data


def train_transform(augment: str) -> v2.Transform:
    """Per-sample transform on uint8 [3, 32, 32] tensors: flip + crop, then the named augmentation."""
    if augment not in AUGMENTS:
        raise LayercritError(f"unknown augmentation '{augment}': use one of {', '.join(AUGMENTS)}")
    if augment == "none":
        return v2.Identity()
    ops = [v2.RandomCrop(32, padding=4, padding_mode="reflect"), v2.RandomHorizontalFlip()]
    if augment == "randaugment":
        ops.append(v2.RandAugment(num_ops=2, magnitude=9))
    elif augment == "autoaugment":
        ops.append(v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10))
    elif augment == "augmix":
        ops.append(v2.AugMix(severity=3, mixture_width=3))
    elif augment == "trivialaugment":
        ops.append(v2.TrivialAugmentWide())
    return v2.Compose(ops)


def simclr_transform() -> v2.Transform:
    """SimCLR's CIFAR views: random resized crop, flip, colour jitter, grayscale (no blur at 32 px)."""
    return v2.Compose([
        v2.RandomResizedCrop(32, scale=(0.2, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
    ])


class AugmentedTensors(Dataset):
    """uint8 images + labels; ``views`` independent draws of ``transform`` per image."""

    def __init__(self, data: EvalData, transform: v2.Transform, views: int = 1):
        self.images, self.labels, self.transform, self.views = data.images, data.labels, transform, views

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        img = self.images[i]
        if self.views == 1:
            return self.transform(img), self.labels[i]
        return torch.stack([self.transform(img) for _ in range(self.views)]), self.labels[i]


def train_loader(data: EvalData, transform: v2.Transform, *, batch_size: int, seed: int, epoch: int,
                 views: int = 1) -> DataLoader:
    """One epoch's loader. Order and augmentation draws depend only on (seed, epoch): a resumed run
    repeats exactly what an uninterrupted one does. Worker-free: on 2 cores the model needs both."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return DataLoader(AugmentedTensors(data, transform, views), batch_size=batch_size, shuffle=True,
                      generator=gen, num_workers=0, drop_last=len(data) > batch_size)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float in [0, 1], channels_last (the layout the training loop runs in)."""
    return x.float().div_(255).contiguous(memory_format=torch.channels_last)


def mixup_cutmix(num_classes: int, mixup_alpha: float, cutmix_alpha: float) -> v2.Transform | None:
    """Batch-level MixUp / CutMix (one of the two per batch, chosen at random); None when both are off."""
    ops = []
    if mixup_alpha > 0:
        ops.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
    if cutmix_alpha > 0:
        ops.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
    if not ops:
        return None
    return ops[0] if len(ops) == 1 else v2.RandomChoice(ops)
