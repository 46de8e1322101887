"""Results database: one SQLite file per study, many models, committed row by row.

Tables
- ``runs``: one row per model id: spec, category, weights checksum, data fingerprint,
  the run's identity (what must not change on resume) and full config, package versions,
  start/end times, and the unmodified model's own metrics.
- ``results``: one row per (run, layer, reset, trial), committed as soon as it is measured,
  so an interrupted run resumes by skipping the keys already present.
- ``partial``: the running float64 sums of (layer, reset, trial) units still in progress,
  saved after every batch, so a resumed run continues mid-way with exactly the same numbers.
"""
from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ..errors import LayercritError

METRICS = ("top1_acc", "top5_acc", "loss", "pred_cos_sim", "pred_l1_err", "pred_l2_err", "pred_ce_loss",
           "pred_kl_div", "pred_agreement", "recovered_acc", "criticality", "criticality_ci")
RESULT_COLUMNS = ("layer", "layer_index", "layer_type", "unit", "reset", "trial", *METRICS, "n_samples", "seconds")
UNIT_COLUMN = "unit TEXT NOT NULL DEFAULT 'layer'"  # "layer" or "block"; databases from before blocks lack it
BASELINE_METRICS = ("top1_acc", "top5_acc", "loss")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY,
    model_id TEXT NOT NULL UNIQUE,
    model_spec TEXT NOT NULL,
    category TEXT,
    weights_sha256 TEXT NOT NULL,
    data_fingerprint TEXT NOT NULL,
    identity TEXT NOT NULL,
    config TEXT NOT NULL,
    versions TEXT NOT NULL,
    started TEXT NOT NULL,
    finished TEXT,
    base_n_samples INTEGER,
    {", ".join(f"base_{m} REAL" for m in BASELINE_METRICS)}
);
CREATE TABLE IF NOT EXISTS results (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    layer TEXT NOT NULL,
    layer_index INTEGER NOT NULL,
    layer_type TEXT NOT NULL,
    {UNIT_COLUMN},
    reset TEXT NOT NULL,
    trial INTEGER NOT NULL,
    {", ".join(f"{m} REAL" for m in METRICS)},
    n_samples INTEGER NOT NULL,
    seconds REAL,
    created TEXT NOT NULL,
    PRIMARY KEY (run_id, layer, reset, trial)
);
CREATE TABLE IF NOT EXISTS partial (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    layer TEXT NOT NULL,
    reset TEXT NOT NULL,
    trial INTEGER NOT NULL,
    n_samples INTEGER NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (run_id, layer, reset, trial)
);
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ResultStore:
    """A study database. Safe to reopen: resuming is just opening the same file again."""

    def __init__(self, path: str | Path, *, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise LayercritError(f"results database not found: {self.path}: check --db")
        if create and not self.path.parent.is_dir():
            raise LayercritError(f"folder for --db does not exist: {self.path.parent}: create it first")
        try:
            self.conn = sqlite3.connect(str(self.path), timeout=30)
            self.conn.executescript(_SCHEMA)
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise LayercritError(f"{self.path} is not a layercrit results database ({e}): choose another --db") from None

    def _migrate(self) -> None:
        """Bring a database written by an earlier layercrit up to this schema."""
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(results)")}
        if "unit" not in columns:  # written before block units existed: every row is a layer
            try:
                with self.conn:
                    self.conn.execute(f"ALTER TABLE results ADD COLUMN {UNIT_COLUMN}")
            except sqlite3.OperationalError as e:
                if "duplicate column" not in str(e):  # another process migrated it just now: fine
                    raise LayercritError(f"cannot update {self.path} to this layercrit's schema ({e}): "
                                         "make the file writable once") from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- writing -------------------------------------------------------------------------
    def open_run(self, model_id: str, *, spec: str, category: str | None, weights_sha256: str,
                 data_fingerprint: str, identity: dict, config: dict, versions: dict) -> int:
        """Return the run id for ``model_id``, creating it, or check that a resume matches it."""
        row = self.conn.execute("SELECT run_id, identity, category FROM runs WHERE model_id = ?",
                                (model_id,)).fetchone()
        if row is not None:
            run_id, stored_json, stored_category = row
            stored = json.loads(stored_json)
            diff = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
            if diff:
                shown = "; ".join(f"{k}: stored {_short(stored.get(k))}, now {_short(identity.get(k))}" for k in diff)
                raise LayercritError(
                    f"model id '{model_id}' is already in {self.path} with a different configuration ({shown}): "
                    "use another --name or another --db"
                )
            if category and category != stored_category:
                with self.conn:
                    self.conn.execute("UPDATE runs SET category = ? WHERE run_id = ?", (category, run_id))
            return run_id
        with self.conn:
            cur = self.conn.execute(
                "INSERT INTO runs (model_id, model_spec, category, weights_sha256, data_fingerprint, identity,"
                " config, versions, started) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (model_id, spec, category, weights_sha256, data_fingerprint, json.dumps(identity, sort_keys=True),
                 json.dumps(config, sort_keys=True), json.dumps(versions, sort_keys=True), _now()))
        return cur.lastrowid

    def set_baseline(self, run_id: int, metrics: dict, n_samples: int) -> None:
        sets = ", ".join(f"base_{m} = ?" for m in BASELINE_METRICS)
        with self.conn:
            self.conn.execute(f"UPDATE runs SET {sets}, base_n_samples = ? WHERE run_id = ?",
                              (*[metrics[m] for m in BASELINE_METRICS], n_samples, run_id))

    def add_result(self, run_id: int, row: dict) -> None:
        """Insert one (layer, reset, trial) row and commit it at once."""
        self.save_progress(run_id, [], [row])

    def save_progress(self, run_id: int, partial: list[tuple[tuple[str, str, int], dict]], finished: list[dict]) -> None:
        """In one transaction: update running sums of units in progress, insert finished rows."""
        cols = ("run_id", *RESULT_COLUMNS, "created")
        now = _now()
        with self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO partial (run_id, layer, reset, trial, n_samples, state) VALUES (?, ?, ?, ?, ?, ?)",
                [(run_id, *key, state["n"], json.dumps(state)) for key, state in partial])
            self.conn.executemany(f"INSERT INTO results ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                                  [(run_id, *[row[c] for c in RESULT_COLUMNS], now) for row in finished])
            self.conn.executemany("DELETE FROM partial WHERE run_id = ? AND layer = ? AND reset = ? AND trial = ?",
                                  [(run_id, r["layer"], r["reset"], r["trial"]) for r in finished])

    def partial_states(self, run_id: int) -> dict[tuple[str, str, int], dict]:
        rows = self.conn.execute("SELECT layer, reset, trial, state FROM partial WHERE run_id = ?", (run_id,))
        return {(layer, reset, int(trial)): json.loads(state) for layer, reset, trial, state in rows}

    def finish_run(self, run_id: int) -> None:
        with self.conn:
            self.conn.execute("UPDATE runs SET finished = ? WHERE run_id = ?", (_now(), run_id))

    # --- reading -------------------------------------------------------------------------
    def done_keys(self, run_id: int) -> set[tuple[str, str, int]]:
        rows = self.conn.execute("SELECT layer, reset, trial FROM results WHERE run_id = ?", (run_id,))
        return {(layer, reset, int(trial)) for layer, reset, trial in rows}

    def runs(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT * FROM runs ORDER BY run_id", self.conn)

    def results(self, model_ids: list[str] | None = None, unit: str | None = None) -> pd.DataFrame:
        """Tidy table: one row per (model, layer, reset, trial), with the run's model info.

        ``unit`` keeps only "layer" or only "block" rows (default: both)."""
        query = ("SELECT r.model_id, r.category, r.model_spec, x.* , r.base_top1_acc FROM results x "
                 "JOIN runs r USING (run_id)")
        where, params = [], ()
        if model_ids:
            where.append(f"r.model_id IN ({', '.join('?' * len(model_ids))})")
            params = tuple(model_ids)
        if unit:
            where.append("x.unit = ?")
            params += (unit,)
        if where:
            query += " WHERE " + " AND ".join(where)
        df = pd.read_sql_query(query + " ORDER BY x.run_id, x.reset, x.trial, x.layer_index", self.conn, params=params)
        return df.drop(columns=["created"])


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 16 else text[:12] + "..."
