"""Model metadata: category, accuracy, epsilon, norm and display name, merged from three places.

Precedence, lowest first: the zoo registry (the study's reported accuracies) < what a study
file stores (a database's category and measured accuracy) < the user's ``--metadata`` CSV.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import ConfigError
from ..zoo.registry import zoo_metadata

META_COLUMNS = ["model_id", "category", "accuracy", "epsilon", "norm", "display_name"]
NUMERIC = ("accuracy", "epsilon")


def empty_metadata() -> pd.DataFrame:
    return _typed(pd.DataFrame(columns=META_COLUMNS))


def registry_metadata() -> pd.DataFrame:
    """The zoo registry's table."""
    return _typed(zoo_metadata())


def _check_file(problem: str) -> ConfigError:
    """``problem``: check the file, named as load_results' parameter (``metadata``; the CLI's flag), or to a
    caller of read_metadata_csv itself as its own (``path``)."""
    return ConfigError(problem + ": check {metadata}", ("metadata",), python={"metadata": "path"})


def read_metadata_csv(path: str | Path) -> pd.DataFrame:
    """A user's metadata CSV: ``model_id`` and any of the other META_COLUMNS (others are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise _check_file(f"metadata file not found: {path}")
    try:
        df = pd.read_csv(path, dtype={"model_id": str, "category": str, "norm": str, "display_name": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise _check_file(f"{path} is not a readable CSV ({str(e).splitlines()[0]})") from None
    if "model_id" not in df.columns:
        raise _check_file(f"{path} has no model_id column (columns: {', '.join(META_COLUMNS)})")
    if not any(c in df.columns for c in META_COLUMNS[1:]):
        raise _check_file(f"{path} has none of the columns {', '.join(META_COLUMNS[1:])}")
    dupes = df["model_id"][df["model_id"].duplicated()].unique()
    if len(dupes):
        raise _check_file(f"{path} lists model id(s) {', '.join(map(str, dupes))} more than once")
    for col in NUMERIC:
        if col in df.columns:
            values = pd.to_numeric(df[col], errors="coerce")
            bad = df[col][values.isna() & df[col].notna()]
            if len(bad):
                raise _check_file(f"{path}: {col} '{bad.iloc[0]}' is not a number")
    return _typed(df)


def merge_metadata(*tables: pd.DataFrame) -> pd.DataFrame:
    """One row per model id; for each column the value of the last table that has one (not empty)."""
    frames = [_typed(t) for t in tables if t is not None and len(t)]
    if not frames:
        return empty_metadata()
    merged = pd.concat(frames, ignore_index=True).groupby("model_id", sort=False).last()
    return _typed(merged.reset_index())


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    df = df.reindex(columns=META_COLUMNS).copy()
    for col in META_COLUMNS:
        if col in NUMERIC:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
        else:
            # empty strings are as good as missing: a lower-precedence value should show through
            df[col] = df[col].astype(object).where(df[col].notna() & (df[col].astype(str).str.strip() != ""), None)
    df["model_id"] = df["model_id"].astype(str)
    return df
