"""improved: a modern supervised recipe in the spirit of timm's A/B/C recipes and torchvision's v2 weights.

Same architecture, data and number of images seen as ``standard``; what changes:
label smoothing 0.1, MixUp (alpha 0.2) or CutMix (alpha 1.0) per batch, TrivialAugmentWide,
linear warm-up then cosine decay, SGD with Nesterov momentum and weight decay only on conv/linear
weights (none on BatchNorm parameters and biases), and an EMA of the weights (with buffers) that is
what gets evaluated and saved.
"""
from __future__ import annotations

from .phases import SupervisedPhase
from .registry import Recipe, register
from .standard import supervised_step

register(Recipe(
    "improved",
    "label smoothing, MixUp/CutMix, TrivialAugment, warm-up + cosine, no decay on norms/biases, EMA",
    [SupervisedPhase("train", supervised_step)],
    dict(augment="trivialaugment", label_smoothing=0.1, mixup_alpha=0.2, cutmix_alpha=1.0, nesterov=True,
         warmup_epochs=1.0, no_decay_norm_bias=True, weight_decay=5e-4, ema_decay=0.998),
))
