"""Input normalization belongs to the model: data is fed as [0, 1] tensors (as in the study)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn


class NormalizedModel(nn.Module):
    """Wraps a classifier with its own mean/std normalization.

    The wrapped network lives at ``.model``, so its layers are named ``model.<name>``
    inside the wrapper, exactly as in the original study's raw results.
    """

    mean: torch.Tensor  # buffers, present where ``normalize``
    std: torch.Tensor

    def __init__(self, model: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None):
        super().__init__()
        self.model = model
        self.normalize = mean is not None and std is not None
        if mean is not None and std is not None:
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            x = (x - self.mean) / self.std
        out: torch.Tensor = self.model(x)
        return out
