"""Temperature scaling: the fitted T minimizes the NLL (checked against a grid), recovers a known temperature, and is
deterministic."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from layercrit.engine.calibration import fit_temperature, nll_at


def sampled(n: int = 4000, classes: int = 10, true_t: float = 2.5, seed: int = 0):
    """Labels drawn from softmax(z / true_t): the NLL-optimal temperature for the logits z is true_t."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, classes, generator=g, dtype=torch.float64) * 4
    y = torch.multinomial(torch.softmax(z / true_t, 1), 1, generator=g).squeeze(1)
    return z, y


def test_recovers_the_temperature_labels_were_drawn_with():
    z, y = sampled(true_t=2.5)
    assert fit_temperature(z, y) == pytest.approx(2.5, rel=0.08)
    z, y = sampled(true_t=0.5, seed=1)
    assert fit_temperature(z, y) == pytest.approx(0.5, rel=0.08)


def test_the_fit_is_the_minimum_of_the_nll_and_deterministic():
    z, y = sampled(true_t=1.7, seed=2)
    t = fit_temperature(z, y)
    grid = np.exp(np.linspace(np.log(0.2), np.log(10), 400))
    best = grid[int(np.argmin([nll_at(z, y, g) for g in grid]))]
    assert nll_at(z, y, t) <= min(nll_at(z, y, best), nll_at(z, y, 1.0)) + 1e-9
    assert fit_temperature(z, y) == t  # the same bits on a rerun


def test_bad_logits_are_refused():
    with pytest.raises(ValueError, match="NaN or Inf"):
        fit_temperature(torch.tensor([[0.0, float("nan")], [1.0, 0.0]]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        fit_temperature(torch.zeros(3), torch.tensor([0, 1, 2]))


def test_held_out_draw_is_disjoint_and_leaves_the_measured_draw_as_it_was():
    from layercrit.data.datasets import draw_indices

    measured = draw_indices(100, 30, seed=7)
    held_out = draw_indices(100, 50, seed=7, skip=30)
    assert not set(measured) & set(held_out) and len(set(held_out)) == 50
    assert draw_indices(100, 80, seed=7)[:30] == measured  # the measured images do not depend on the hold-out
    with pytest.raises(ValueError, match="beside the 30 measured"):
        draw_indices(100, 71, seed=7, skip=30)
