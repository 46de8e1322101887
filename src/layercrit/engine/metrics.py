"""Per-(layer, reset, trial) metrics, accumulated over batches in float64.

Against labels: top-1 / top-5 accuracy [%] and cross-entropy. Against the unmodified
model's predictions: mean cosine similarity, L1 and L2 distance of the softmax vectors,
cross-entropy between the logit sets (-sum p_base log p_reset), KL(p_base || p_reset) and
top-1 agreement [%]. Criticality = 100 * (1 - cosine similarity), with the 95 % confidence
half-width of that mean (normal approximation, finite-population corrected: the "exact"
value is the mean over the whole evaluation set, so the interval shrinks to 0 there).

What is compared (``output``, see outputs.py) changes the vectors, not the formulas: ``"probs"`` compares
softmax vectors (the study); ``"logits"`` compares the raw class scores with cosine, L1 and L2 (cross-entropy,
KL, agreement and the label metrics still come from their softmax and argmax); ``"features"`` (a module's or
a callable's output, flattened per image) compares those vectors with cosine, L1 and L2 only, and every
metric that needs class scores (top-1/top-5, loss, cross-entropy, KL, agreement, recovered accuracy) is
None (NULL in the database, NaN in tables): undefined, not zero.
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
        """Means over the images seen; NaN where none were (an output without class scores: features)."""
        if self.n == 0:
            return dict.fromkeys(self.sums, float("nan"))
        r = {k: v / self.n for k, v in self.sums.items()}
        r["top1_acc"] *= 100
        r["top5_acc"] *= 100
        return r


Z95 = 1.959963984540054  # two-sided 95 % normal quantile
SUM_KEYS = ("top1_acc", "top5_acc", "loss", "pred_cos_sim", "pred_cos_sim_sq", "pred_l1_err", "pred_l2_err",
            "pred_ce_loss", "pred_kl_div", "pred_agreement")
COMPARES = ("probs", "logits", "features")
# defined only where the output is class scores ("probs", "logits"); None for "features"
CLASS_METRICS = ("top1_acc", "top5_acc", "loss", "pred_ce_loss", "pred_kl_div", "pred_agreement", "recovered_acc")


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

    def update(self, logits: torch.Tensor, base_logits: torch.Tensor, labels: torch.Tensor,
               compare: str = "probs") -> None:
        """Add a batch: the reset model's outputs, the unmodified model's, the labels. ``compare``: "probs"
        (softmax vectors), "logits" (raw class scores) or "features" (any tensor, one row per image)."""
        if compare not in COMPARES:
            raise ValueError(f"compare must be one of {', '.join(COMPARES)}, not {compare!r}")
        s: dict[str, float] = {}
        if compare == "features":
            v, base_v = logits.double().reshape(len(logits), -1), base_logits.double().reshape(len(base_logits), -1)
        else:
            s = _label_sums(logits, labels)
            logp, base_logp = F.log_softmax(logits.double(), 1), F.log_softmax(base_logits.double(), 1)
            p, base_p = logp.exp(), base_logp.exp()
            s["pred_ce_loss"] = -(base_p * logp).sum(1).sum().item()
            s["pred_kl_div"] = (base_p * (base_logp - logp)).sum(1).sum().item()
            s["pred_agreement"] = (logits.argmax(1) == base_logits.argmax(1)).sum().item()
            v, base_v = (p, base_p) if compare == "probs" else (logits.double(), base_logits.double())
        cos = F.cosine_similarity(v, base_v, dim=1)
        if compare != "probs":  # a softmax vector is never zero
            # two zero vectors (a feature gate closed for an image in both models) are the same output: cosine 1,
            # where the formula gives 0 and would count the image as fully changed; one zero vector stays 0
            cos = torch.where((v.abs().amax(1) == 0) & (base_v.abs().amax(1) == 0), torch.ones_like(cos), cos)
        s["pred_cos_sim"] = cos.sum().item()
        s["pred_cos_sim_sq"] = cos.square().sum().item()
        s["pred_l1_err"] = (v - base_v).abs().sum(1).sum().item()
        s["pred_l2_err"] = (v - base_v).norm(dim=1).sum().item()
        for k, x in s.items():
            self.sums[k] += x
        self.n += len(logits)

    def criticality_ci(self, population: int) -> float:
        """95 % half-width of the criticality [percentage points] after ``self.n`` of ``population`` images."""
        n = self.n
        if n < 2:
            return float("inf")
        mean = self.sums["pred_cos_sim"] / n
        var = max(self.sums["pred_cos_sim_sq"] / n - mean * mean, 0.0) * n / (n - 1)
        fpc = (population - n) / (population - 1) if population > 1 else 0.0
        return 100 * Z95 * math.sqrt(var / n * max(fpc, 0.0))

    def result(self, base_top1: float, population: int, classes: bool = True) -> dict[str, float | None]:
        """Means over the images seen; ``base_top1`` is the unmodified model's top-1 on the same images.
        ``classes=False`` (features compared): the :data:`CLASS_METRICS` are None."""
        r = {k: v / self.n for k, v in self.sums.items() if k != "pred_cos_sim_sq"}
        for k in ("top1_acc", "top5_acc", "pred_agreement"):
            r[k] *= 100
        r["recovered_acc"] = r["top1_acc"] / base_top1 if base_top1 > 0 else float("nan")
        r["criticality"] = 100 * (1 - r["pred_cos_sim"])
        r["criticality_ci"] = self.criticality_ci(population)
        out: dict[str, float | None] = dict(r)
        if not classes:
            out.update(dict.fromkeys(CLASS_METRICS))
        return out
