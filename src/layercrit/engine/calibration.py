"""Temperature scaling (Guo et al. 2017): one scalar T per model, fitted by minimizing the negative log-likelihood
of softmax(logits / T) on labelled images held out from the measured ones, then applied to the unmodified and every
reset model's logits. Criticality measured on T-scaled outputs compares models at equal calibration: the cosine of
softmax vectors moves less for a confident model, so an uncalibrated comparison partly compares confidence.
"""
from __future__ import annotations

import json
import math

import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar

# T is searched on a log scale within [1/20, 20]: wide enough for any trained classifier, bounded so a model whose
# NLL keeps falling (labels it gets all right) cannot run away
LOG_T_BOUND = math.log(20.0)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T minimizing the mean cross-entropy of ``logits / T`` against ``labels`` (float64,
    deterministic: a bounded scalar search on log T, to 1e-6). Returns T rounded to 6 significant digits."""
    z, y = logits.detach().double().cpu(), labels.detach().cpu()
    if z.ndim != 2 or len(z) != len(y) or len(y) < 2:
        raise ValueError(f"fit_temperature needs logits of shape (N, classes) with N >= 2 labels, got {tuple(z.shape)}")
    if not bool(torch.isfinite(z).all()):
        raise ValueError("fit_temperature: the logits hold NaN or Inf")

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(z / math.exp(log_t), y))

    best = minimize_scalar(nll, bounds=(-LOG_T_BOUND, LOG_T_BOUND), method="bounded", options={"xatol": 1e-6})
    return float(f"{math.exp(best.x):.6g}")


def nll_at(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """Mean cross-entropy of ``logits / temperature`` (what the fit minimizes; recorded beside T)."""
    return float(F.cross_entropy(logits.detach().double().cpu() / temperature, labels.detach().cpu()))


def logits_of(net: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """The model's fp32 logits on ``images`` (uint8, or float in [0, 1]), in batches, without gradients."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(device)
            out.append(net(x.float().div(255) if x.dtype == torch.uint8 else x.float()).float().cpu())
    return torch.cat(out)


def calibration_record(logits: torch.Tensor, labels: torch.Tensor, temperature: float, fingerprint: str) -> dict:
    """What a run records of its fitted temperature: T, the images it was fitted on, the NLL before and after."""
    return {"temperature": temperature, "images": len(labels), "data_fingerprint": fingerprint,
            "nll_at_1": round(nll_at(logits, labels, 1.0), 6), "nll_at_t": round(nll_at(logits, labels, temperature), 6)}


def at_bound(temperature: float) -> bool:
    """Whether a fitted T stopped at the search's edge (1/20 or 20): the NLL still fell there, as for an untrained
    or at-chance model (T -> large flattens its softmax) or one that gets every held-out label right."""
    return abs(abs(math.log(temperature)) - LOG_T_BOUND) < 1e-3


def resumed_temperature_error(stored_config: str | None, record: dict) -> str | None:
    """Why a run cannot continue with this fit (None: it can): the rows already in the run were measured at
    the temperature its config recorded, and this fit (other held-out images, another machine's rounding) gave
    another one. A relative difference below 1e-4 is one temperature."""
    new = (record.get("calibration") or {}).get("temperature")
    try:
        old = (json.loads(stored_config or "{}").get("calibration") or {}).get("temperature")
    except ValueError:
        return None
    if new is None or old is None or abs(new - old) <= 1e-4 * abs(old):
        return None
    return (f"this run was measured at the temperature T = {old:g} fitted then; this fit gave T = {new:g} (other "
            "held-out images: {calibration_samples}, {seed} or data): measure with the same ones, or into "
            "another results database")
