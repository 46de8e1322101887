"""Adversarial training (Madry et al. 2018): train on PGD examples inside an eps-ball of the image.

The attack works in [0, 1] input space on the whole :class:`~layercrit.models.NormalizedModel`
(normalization inside), so ``eps`` means what it does for the study's robust ImageNet models:
L-inf eps in pixel units (``2/255``), L2 eps in the [0, 1] range (``0.5``).

pgd-linf / pgd-l2  ``steps`` PGD steps with a random start, step size 2.5*eps/steps. With ``steps 1``
                   this is FGSM with random start and step 1.25*eps ("fast is better than free",
                   Wong et al. 2020), the cheap default here. Evaluated by clean accuracy and by PGD
                   accuracy at the training eps (``robust_eval_steps`` steps, random start).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LayercritError
from .data import to_float
from .recipes import Phase, Recipe, register


def default_step_size(eps: float, steps: int) -> float:
    return 1.25 * eps if steps <= 1 else 2.5 * eps / steps


def _l2_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float, steps: int,
        step_size: float | None = None, random_start: bool = True) -> torch.Tensor:
    """Adversarial examples in [0, 1] maximizing cross-entropy within the ``norm`` ball of radius ``eps``.

    Leaves the model's parameters' gradients untouched and its train/eval mode as it is.
    """
    if norm not in ("linf", "l2"):
        raise LayercritError(f"unknown attack norm '{norm}': use linf or l2")
    step_size = step_size or default_step_size(eps, steps)
    x = x.detach()
    if random_start:
        if norm == "linf":
            delta = torch.empty_like(x).uniform_(-eps, eps)
        else:
            direction = torch.randn_like(x)
            radius = torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype) * eps
            delta = direction / _l2_norm(direction) * radius
    else:
        delta = torch.zeros_like(x)
    delta = (x + delta).clamp(0, 1) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            if norm == "linf":
                delta = (delta + step_size * grad.sign()).clamp(-eps, eps)
            else:
                delta = delta + step_size * grad / _l2_norm(grad)
                delta = delta * (eps / _l2_norm(delta)).clamp(max=1.0)
            delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def adversarial_step(ctx, x, y):
    cfg = ctx.cfg
    x = to_float(x)
    x_adv = pgd(ctx.model, x, y, norm=cfg.norm, eps=cfg.eps, steps=cfg.steps,
                step_size=cfg.step_size or None).contiguous(memory_format=torch.channels_last)
    logits = ctx.model(x_adv)
    return F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing), logits


def _validate(cfg) -> None:
    if cfg.eps <= 0:
        raise LayercritError(f"{cfg.method} needs --eps > 0 (e.g. 2/255 for linf, 0.5 for l2)")
    if cfg.norm == "linf" and cfg.eps >= 1:
        raise LayercritError(f"eps {cfg.eps:g} for pgd-linf is in [0, 1] units: write {cfg.eps:g}/255")
    if cfg.steps < 1:
        raise LayercritError(f"--steps must be at least 1 for {cfg.method}, got {cfg.steps}")


for _norm, _eps in (("linf", 8 / 255), ("l2", 0.5)):
    register(Recipe(
        f"pgd-{_norm}", f"PGD adversarial training, {_norm} ball (default 1 step = FGSM with random start)",
        [Phase("train", "supervised", lambda c: c.epochs, adversarial_step)],
        dict(norm=_norm, eps=_eps, steps=1), adversarial=True, validate=_validate,
    ))
