"""Supervised recipes: the baseline and the augmentation methods.

standard        SGD + momentum 0.9, weight decay 5e-4, random crop (pad 4) + flip, cosine schedule.
augmix          standard + torchvision's AugMix (severity 3, width 3) per image.
randaugment     standard + RandAugment (2 ops, magnitude 9).
autoaugment     standard + AutoAugment with the CIFAR-10 policy.
gaussian-noise  standard + N(0, noise_std^2) noise added to every [0, 1] training batch (clamped).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import to_float
from .phases import SupervisedPhase
from .registry import Recipe, register


def supervised_step(ctx, x, y):
    """Cross-entropy on (optionally noised, optionally MixUp/CutMix-ed) images; returns (loss, logits)."""
    x = to_float(x)
    if ctx.cfg.noise_std > 0:
        x = (x + ctx.cfg.noise_std * torch.randn_like(x)).clamp_(0, 1)
    target = y
    if ctx.mix is not None:
        x, target = ctx.mix(x, y)  # soft targets
        x = x.contiguous(memory_format=torch.channels_last)
    logits = ctx.model(x)
    return F.cross_entropy(logits, target, label_smoothing=ctx.cfg.label_smoothing), logits


def supervised(name: str, summary: str, **defaults) -> Recipe:
    return register(Recipe(name, summary, [SupervisedPhase("train", supervised_step)], defaults))


supervised("standard", "SGD + momentum, flip + crop, cosine schedule (the baseline)")
supervised("augmix", "standard + AugMix", augment="augmix")
supervised("randaugment", "standard + RandAugment (2 ops, magnitude 9)", augment="randaugment")
supervised("autoaugment", "standard + AutoAugment (CIFAR-10 policy)", augment="autoaugment")
supervised("gaussian-noise", "standard + Gaussian noise on the inputs (std 0.1 of the [0, 1] range)",
           noise_std=0.1)
