"""Self-supervised and control recipes: SimCLR + linear probe, and frozen-random.

simclr         Contrastive pre-training of the backbone (everything but ``fc``; Chen et al. 2020):
               two augmented views per image (random resized crop, flip, colour jitter, grayscale),
               a 2-layer MLP projection head, NT-Xent loss at temperature 0.5, SGD + cosine. Then a
               linear probe: the backbone is frozen (eval mode), its features of the (unaugmented)
               training images are computed once and ``fc`` is trained on them with Adam, like the
               study's self-supervised models with linear-probe heads. The saved model is the full
               classifier with the probe as ``fc``; the projection head is dropped.
frozen-random  Control: the randomly initialized backbone stays frozen, only ``fc`` is trained (the
               same probe). Its BatchNorm running statistics are first re-estimated on training
               images (no parameter changes), since a frozen random network's default statistics
               (mean 0, var 1) let activations grow with depth.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import simclr_transform, to_float
from .phases import ContrastivePhase, ProbePhase, features
from .registry import Recipe, register


def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over 2B projections ordered (view 0 of image i at 2i, view 1 at 2i + 1)."""
    z = F.normalize(z, dim=1)
    sim = z @ z.t() / temperature
    sim.fill_diagonal_(float("-inf"))
    idx = torch.arange(z.shape[0])
    return F.cross_entropy(sim, idx ^ 1)  # the positive of 2i is 2i + 1 and vice versa


def simclr_step(ctx, x, y):
    b = x.shape[0]
    views = to_float(x.reshape(b * 2, *x.shape[2:]))  # [B, 2, C, H, W] -> [2B, C, H, W], pairs adjacent
    z = ctx.head(features(ctx.model, views))
    return nt_xent(z.float(), ctx.cfg.temperature), None


_PROBE = ProbePhase("probe")
register(Recipe(
    "simclr", "SimCLR contrastive pre-training of the backbone, then a linear probe on frozen features",
    [ContrastivePhase("pretrain", simclr_step, views=2, transform=lambda c: simclr_transform(), probe=_PROBE),
     _PROBE],
    dict(probe_epochs=10, augment="none", temperature=0.5),
))

register(Recipe(
    "frozen-random", "control: random backbone frozen, only fc trained (linear probe)",
    [ProbePhase("probe", epochs=lambda c: c.epochs, calibrate_bn=True)],
    dict(epochs=10, augment="none"),
))
