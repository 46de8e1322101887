"""Adversarial training (Madry et al. 2018): train on PGD examples inside an eps-ball of the image.

The attack (:func:`layercrit.accuracy.pgd`) works in [0, 1] input space on the whole
:class:`~layercrit.models.NormalizedModel` (normalization inside), so ``eps`` means what it does for
the study's robust ImageNet models: L-inf eps in pixel units (``2/255``), L2 eps in the [0, 1] range (``0.5``).

pgd-linf / pgd-l2  ``steps`` PGD steps with a random start, step size 2.5*eps/steps. With ``steps 1``
                   this is FGSM with random start and step 1.25*eps ("fast is better than free",
                   Wong et al. 2020), the cheap default here. Evaluated by clean accuracy and by PGD
                   accuracy at the training eps (``robust_eval_steps`` steps, random start).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..accuracy import pgd
from ..errors import ConfigError, LayercritError
from .data import to_float
from .phases import SupervisedPhase
from .registry import Recipe, register


def adversarial_step(ctx, x, y):
    cfg = ctx.cfg
    x = to_float(x)
    x_adv = pgd(ctx.model, x, y, norm=cfg.norm, eps=cfg.eps, steps=cfg.steps,
                step_size=cfg.step_size or None).contiguous(memory_format=torch.channels_last)
    logits = ctx.model(x_adv)
    return F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing), logits


def _validate(cfg) -> None:
    if cfg.eps <= 0:
        raise ConfigError(f"{cfg.method} needs {{eps}} > 0 (e.g. 2/255 for linf, 0.5 for l2)")
    if cfg.norm not in ("linf", "l2"):
        raise LayercritError(f"unknown attack norm '{cfg.norm}': use linf or l2")
    if cfg.norm == "linf" and cfg.eps >= 1:
        raise LayercritError(f"eps {cfg.eps:g} for pgd-linf is in [0, 1] units: write {cfg.eps:g}/255")
    if cfg.steps < 1:
        raise ConfigError(f"{{steps}} must be at least 1 for {cfg.method}, got {cfg.steps}")
    if cfg.robust_eval_steps < 1:
        raise ConfigError(f"{{robust_eval_steps}} must be at least 1 for {cfg.method}, got {cfg.robust_eval_steps}")


for _norm, _eps in (("linf", 8 / 255), ("l2", 0.5)):
    register(Recipe(
        f"pgd-{_norm}", f"PGD adversarial training, {_norm} ball (default 1 step = FGSM with random start)",
        [SupervisedPhase("train", adversarial_step)],
        dict(norm=_norm, eps=_eps, steps=1), adversarial=True, validate=_validate,
    ))
