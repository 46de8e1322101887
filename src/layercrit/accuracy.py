"""How well a model does on labelled data: clean top-1, PGD robust top-1, and output confidence.

Shared by the training lab, compression and the study tools. ``data`` is anything with
``batches(batch_size, device) -> iterator of (x in [0, 1], labels)`` and ``len()``
(:class:`layercrit.data.EvalData`); ``model`` takes [0, 1] images (normalization inside).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import LayercritError


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def accuracy(model: nn.Module, data, batch_size: int = 500) -> float:
    """Top-1 accuracy (%) of ``model`` on ``data``, in eval mode, on whatever device the model is."""
    model.eval()
    correct = 0
    for x, y in data.batches(batch_size, _device(model)):
        correct += (model(x.contiguous(memory_format=torch.channels_last)).argmax(1) == y).sum().item()
    return 100.0 * correct / len(data)


@torch.no_grad()
def confidence(model: nn.Module, data, batch_size: int = 500) -> dict[str, float]:
    """Top-1 accuracy (%), mean max-softmax probability and mean softmax entropy (nats) on ``data``."""
    model.eval()
    correct, top, entropy = 0, 0.0, 0.0
    for x, y in data.batches(batch_size, _device(model)):
        logits = model(x.contiguous(memory_format=torch.channels_last)).double()
        logp = F.log_softmax(logits, dim=1)
        correct += (logits.argmax(1) == y).sum().item()
        top += logp.exp().amax(1).sum().item()
        entropy += -(logp.exp() * logp).sum(1).sum().item()
    n = len(data)
    return {"top1_acc": 100.0 * correct / n, "mean_confidence": top / n, "mean_entropy": entropy / n}


def _l2_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)


def default_step_size(eps: float, steps: int) -> float:
    """1.25 * eps for one step (FGSM with random start, Wong et al. 2020), else 2.5 * eps / steps (Madry)."""
    return 1.25 * eps if steps <= 1 else 2.5 * eps / steps


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
            radius = torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) * eps
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


def robust_accuracy(model: nn.Module, data, *, norm: str, eps: float, steps: int, batch_size: int = 250) -> float:
    """Top-1 accuracy (%) under a ``steps``-step PGD attack with random start, step 2.5 * eps / steps."""
    model.eval()
    correct = 0
    for x, y in data.batches(batch_size, _device(model)):
        x_adv = pgd(model, x, y, norm=norm, eps=eps, steps=steps, step_size=2.5 * eps / steps)
        with torch.no_grad():
            correct += (model(x_adv).argmax(1) == y).sum().item()
    return 100.0 * correct / len(data)
