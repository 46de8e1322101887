"""Per-(layer, reset, trial) metrics, accumulated over batches in float64.

Against labels: top-1 / top-5 accuracy [%] and cross-entropy. Against the unmodified
model's predictions: mean cosine similarity, L1 and L2 distance of the softmax vectors,
cross-entropy between the logit sets (-sum p_base log p_reset), KL(p_base || p_reset) and
top-1 agreement [%]. Criticality = 100 * (1 - cosine similarity), with the 95 % confidence
half-width of that mean (normal approximation, finite-population corrected: the "exact"
value is the mean over the whole evaluation set, so the interval shrinks to 0 there).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _label_sums(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    k = min(5, logits.shape[1])
    top5 = logits.topk(k, dim=1).indices
    return {
        "top1_acc": (logits.argmax(1) == labels).sum().item(),
        "top5_acc": (top5 == labels[:, None]).any(1).sum().item(),
        "loss": F.cross_entropy(logits.double(), labels, reduction="sum").item(),
    }


class BaselineMetrics:
    """Metrics of the unmodified model."""

    def __init__(self):
        self.n, self.sums = 0, {"top1_acc": 0.0, "top5_acc": 0.0, "loss": 0.0}

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        for k, v in _label_sums(logits, labels).items():
            self.sums[k] += v
        self.n += len(labels)

    def result(self) -> dict[str, float]:
        r = {k: v / self.n for k, v in self.sums.items()}
        r["top1_acc"] *= 100
        r["top5_acc"] *= 100
        return r


Z95 = 1.959963984540054  # two-sided 95 % normal quantile
SUM_KEYS = ("top1_acc", "top5_acc", "loss", "pred_cos_sim", "pred_cos_sim_sq", "pred_l1_err", "pred_l2_err",
            "pred_ce_loss", "pred_kl_div", "pred_agreement")


class ResetMetrics:
    """Metrics of a reset model against labels and against the unmodified model.

    Holds plain float64 sums, so its state can be saved and resumed exactly (``state``/``from_state``).
    """

    def __init__(self):
        self.n = 0
        self.sums = dict.fromkeys(SUM_KEYS, 0.0)

    def state(self) -> dict:
        return {"n": self.n, **self.sums}

    @classmethod
    def from_state(cls, state: dict) -> "ResetMetrics":
        m = cls()
        m.n = int(state["n"])
        m.sums = {k: float(state[k]) for k in SUM_KEYS}
        return m

    def update(self, logits: torch.Tensor, base_logits: torch.Tensor, labels: torch.Tensor) -> None:
        s = _label_sums(logits, labels)
        logp, base_logp = F.log_softmax(logits.double(), 1), F.log_softmax(base_logits.double(), 1)
        p, base_p = logp.exp(), base_logp.exp()
        cos = F.cosine_similarity(p, base_p, dim=1)
        s["pred_cos_sim"] = cos.sum().item()
        s["pred_cos_sim_sq"] = cos.square().sum().item()
        s["pred_l1_err"] = (p - base_p).abs().sum(1).sum().item()
        s["pred_l2_err"] = (p - base_p).norm(dim=1).sum().item()
        s["pred_ce_loss"] = -(base_p * logp).sum(1).sum().item()
        s["pred_kl_div"] = (base_p * (base_logp - logp)).sum(1).sum().item()
        s["pred_agreement"] = (logits.argmax(1) == base_logits.argmax(1)).sum().item()
        for k, v in s.items():
            self.sums[k] += v
        self.n += len(labels)

    def criticality_ci(self, population: int) -> float:
        """95 % half-width of the criticality [percentage points] after ``self.n`` of ``population`` images."""
        n = self.n
        if n < 2:
            return float("inf")
        mean = self.sums["pred_cos_sim"] / n
        var = max(self.sums["pred_cos_sim_sq"] / n - mean * mean, 0.0) * n / (n - 1)
        fpc = (population - n) / (population - 1) if population > 1 else 0.0
        return 100 * Z95 * math.sqrt(var / n * max(fpc, 0.0))

    def result(self, base_top1: float, population: int) -> dict[str, float]:
        """Means over the images seen; ``base_top1`` is the unmodified model's top-1 on the same images."""
        r = {k: v / self.n for k, v in self.sums.items() if k != "pred_cos_sim_sq"}
        for k in ("top1_acc", "top5_acc", "pred_agreement"):
            r[k] *= 100
        r["recovered_acc"] = r["top1_acc"] / base_top1 if base_top1 > 0 else float("nan")
        r["criticality"] = 100 * (1 - r["pred_cos_sim"])
        r["criticality_ci"] = self.criticality_ci(population)
        return r
