"""``noise:<sigma>``: Gaussian noise added to the layer's parameters, sigma times the layer's weight
standard deviation (a perturbation study rather than a reset: how far predictions move under small
weight noise, e.g. Morcos et al. 2018, Zhang et al. 2022).

Each parameter tensor of the unit gets ``sigma * std(w) * N(0, 1)`` noise, where ``w`` is the weight of
the module that owns it (a layer's bias is scaled by that layer's weight; a tensor without such a
weight by its own std). Stochastic: every trial is another draw. The draw depends only on (seed,
trial, unit, parameter), through a generator of its own on the CPU: identical in any order,
selection, process or device, like ``random``.

This file is the whole kind: ``layercrit.resets.kinds`` imports it, and the command line, study
files, Python and Ray take ``noise:<sigma>`` from the registry.
"""
from __future__ import annotations

import hashlib
import logging
import math

from ... import validate
from ...errors import ConfigError
from .base import Reset, ResetContext, params_of, register_reset, unit_name

log = logging.getLogger("layercrit")


def noise_seed(seed: int, trial: int, unit: str, parameter: str) -> int:
    """The generator seed of one parameter's draw (63 bits of a hash: independent of everything else)."""
    text = f"layercrit/noise/seed={seed}/trial={trial}/unit={unit}/parameter={parameter}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


@register_reset("noise", usage="noise:<sigma>",
                summary="trained + Gaussian noise of sigma x the layer's weight std (a perturbation)")
class NoiseReset(Reset):
    stochastic = True

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma, self.name, self.seed = sigma, f"noise:{sigma:g}", 0

    @classmethod
    def parse(cls, arg, spec):
        if not arg:
            return None
        try:
            sigma = float(arg)
        except ValueError:
            sigma = float("nan")
        if not (math.isfinite(sigma) and sigma > 0):
            raise ConfigError(f"{{reset}} {validate.show(spec)}: sigma must be a positive number (the noise's "
                              "standard deviation in units of the layer's weight std), e.g. noise:0.1", ("reset",))
        return cls(sigma)

    def prepare(self, context: ResetContext) -> NoiseReset:
        self.seed = context.seed
        return self

    def values(self, network, unit, trial):
        import torch  # lazy: kinds are listed without importing PyTorch

        params = params_of(network, unit)
        out = {}
        for name, p in params.items():
            owner = name.rpartition(".")[0]
            weight = params.get(f"{owner}.weight" if owner else "weight", p)
            scale = self.sigma * float(weight.detach().double().std()) if weight.numel() > 1 else 0.0
            if scale == 0.0 and trial == 0:  # once per tensor: its criticality would be 0 by construction
                log.warning(f"{self.name} on {unit_name(unit)}.{name}: the scaling weight has no spread (one "
                            "element, or all equal), so the noise is 0 and this tensor is left as trained")
            generator = torch.Generator().manual_seed(noise_seed(self.seed, trial, unit_name(unit), name))
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
            out[name] = (p.detach().double().cpu() + scale * noise).to(p)
        return out
