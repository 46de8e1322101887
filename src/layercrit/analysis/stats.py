"""Rank correlation of average criticality with accuracy (Spearman and Kendall, via scipy)."""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

DEFAULT_WITHOUT = ("adversarial training",)
MIN_MODELS = 3  # below this a rank correlation says nothing; reported as NaN


def rank_correlation(x, y) -> dict:
    """Spearman rho and Kendall tau of two samples, with p-values; NaN pairs dropped."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if len(x) < MIN_MODELS:
        return {"n": int(len(x)), "spearman": {"rho": np.nan, "p": np.nan}, "kendall": {"tau": np.nan, "p": np.nan}}
    with warnings.catch_warnings():
        # constant input (e.g. equal accuracies) gives NaN, which is the right answer, not a problem
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        rho, p_rho = stats.spearmanr(x, y)
        tau, p_tau = stats.kendalltau(x, y)
    return {"n": int(len(x)), "spearman": {"rho": float(rho), "p": float(p_rho)},
            "kendall": {"tau": float(tau), "p": float(p_tau)}}


def correlations(models: pd.DataFrame, without: Sequence[str] = DEFAULT_WITHOUT) -> dict:
    """``{"all": ..., "without_<category>": ...}`` over a model_table (accuracy vs avg_criticality)."""
    out = {"all": rank_correlation(models["accuracy"], models["avg_criticality"])}
    for category in without:
        rest = models[models["category"] != category]
        out[f"without_{category}"] = rank_correlation(rest["accuracy"], rest["avg_criticality"])
    return out


def correlation_table(models: pd.DataFrame, without: Sequence[str] = DEFAULT_WITHOUT) -> pd.DataFrame:
    """The same as a frame: one row per subset (``all``, ``without_<category>``)."""
    rows = [{"subset": name, "n": c["n"], "spearman_rho": c["spearman"]["rho"], "spearman_p": c["spearman"]["p"],
             "kendall_tau": c["kendall"]["tau"], "kendall_p": c["kendall"]["p"]}
            for name, c in correlations(models, without).items()]
    return pd.DataFrame(rows)


def welch_contrast(groups: Sequence[tuple[float, Sequence[float]]], confidence: float = 0.95) -> dict:
    """A contrast of group means, sum c_g * mean_g, with its Welch interval: se^2 = sum c_g^2 s_g^2 / n_g and the
    t quantile at the Welch-Satterthwaite degrees of freedom (sum v_g)^2 / sum v_g^2 / (n_g - 1), v_g = c_g^2 s_g^2
    / n_g. ``groups``: (coefficient, one value per seed); each group needs two values (one: its spread is unknown,
    the result is all NaN). Returns delta, se, df, lo, hi (df NaN and a zero-width interval where every group is
    constant)."""
    nan = {"delta": np.nan, "se": np.nan, "df": np.nan, "lo": np.nan, "hi": np.nan}
    parts = []
    for coefficient, values in groups:
        v = np.asarray(values, dtype=float)
        v = v[~np.isnan(v)]
        if len(v) < 2:
            return nan
        parts.append((coefficient, float(v.mean()), float(v.var(ddof=1)), len(v)))
    delta = sum(c * m for c, m, _, _ in parts)
    terms = [c * c * var / n for c, _, var, n in parts]
    se = float(np.sqrt(sum(terms)))
    if se == 0.0:
        return {"delta": delta, "se": 0.0, "df": np.nan, "lo": delta, "hi": delta}
    df = sum(terms) ** 2 / sum(t * t / (n - 1) for t, (_, _, _, n) in zip(terms, parts))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    return {"delta": delta, "se": se, "df": float(df), "lo": delta - half, "hi": delta + half}
