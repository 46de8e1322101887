"""Export a results database as a tidy table or in the original study's raw-results layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..paths import atomic_write, check_output_file
from .sqlite import ResultStore

# The original study's raw-results columns, in order (METHOD.md, last section).
PAPER_COLUMNS = ["top1_acc", "top5_acc", "loss", "batch_acc", "layer", "pred_cos_sim", "pred_l1_err",
                 "pred_l2_err", "pred_ce_loss", "trial", "recovered_acc", "model_id"]
WRAPPER_PREFIX = "model."  # the study names layers inside its normalization wrapper


def to_paper_layout(tidy: pd.DataFrame, reset: str = "random") -> pd.DataFrame:
    """Rows of one reset kind, renamed and typed exactly as the study's CSV."""
    df = tidy[tidy["reset"] == reset].copy()
    df["layer"] = WRAPPER_PREFIX + df["layer"]
    df["trial"] = df["trial"].astype(float)
    df["batch_acc"] = np.nan
    return df[PAPER_COLUMNS].reset_index(drop=True)


def export(db: str | Path, out: str | Path, *, layout: str = "tidy", reset: str = "random",
           unit: str | None = None) -> pd.DataFrame:
    """Write a results database's rows to a .csv or .parquet file.

    Args:
        db: the results database (written by :func:`layercrit.measure` with ``store=``).
        out: the file written: ``.csv`` or ``.parquet``.
        layout: ``"tidy"`` (default: one row per unit x reset x trial, every column) or ``"paper"`` (the
            original study's raw-results columns, layer names inside its wrapper: ``model.<layer>``).
        reset: with ``layout="paper"``: the reset kind whose rows are written (default ``"random"``).
        unit: keep only ``"layer"`` or ``"block"`` rows (default: all for tidy, layers for the paper layout).

    Returns:
        The table written, as a ``pandas.DataFrame``.

    Examples:
        >>> import layercrit as lc
        >>> table = lc.export("study.db", "study.csv")  # doctest: +SKIP
        >>> paper = lc.export("study.db", "raw.csv", layout="paper", reset="random")  # doctest: +SKIP
    """
    out = Path(out)
    if out.suffix not in (".csv", ".parquet"):
        raise ConfigError(f"{{out}} {out}: use a .csv or .parquet file name")
    if layout not in ("tidy", "paper"):
        raise ConfigError(f"{{layout}} {layout}: use tidy or paper")
    check_output_file(out)  # before reading: a folder or a missing folder is named at once
    if unit is None and layout == "paper":
        unit = "layer"
    with ResultStore(db, create=False) as store:
        tidy = store.results(unit=unit)
    if tidy.empty:
        raise ConfigError(f"{db} holds no {unit + ' ' if unit else ''}results yet: run `layercrit measure`"
                          f"{' {unit} ' + unit if unit else ''} first")
    table = to_paper_layout(tidy, reset) if layout == "paper" else tidy
    if table.empty:
        raise ConfigError(f"{db} holds no '{reset}' rows for the paper layout: pick one with {{reset}}")
    with atomic_write(out) as tmp:  # never leave a half-written export (or its temporary) behind
        if out.suffix == ".csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp, index=False)
    return table
