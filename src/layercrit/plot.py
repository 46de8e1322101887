"""Figures for a notebook from a results table: ``layers``, ``heatmap``, ``stages``, ``difference``.

    import layercrit as lc
    from layercrit import plot
    df = lc.measure(model, data, trials=3)
    fig = plot.layers(df)                      # a matplotlib Figure: shown by the notebook, fig.savefig(...)

Each takes the tidy table of :func:`layercrit.measure` (or one read back from a database or a ``layercrit
export`` CSV) or a :class:`layercrit.analysis.Results`, and returns a Figure without showing or saving it.
matplotlib is imported with this module, not with ``layercrit``; neither imports PyTorch. The functions live in
:mod:`layercrit.report.plot` (figures belong to the report package, which reads results through
:mod:`layercrit.analysis`).
"""
from __future__ import annotations

from .report.plot import ERRORS, METRICS, difference, heatmap, layers, stages

__all__ = ["ERRORS", "METRICS", "difference", "heatmap", "layers", "stages"]
