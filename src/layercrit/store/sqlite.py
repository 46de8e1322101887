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

import contextlib
import json
import math
import os
import socket
import sqlite3
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ..errors import BusyError, ConfigError, LayercritError

METRICS = ("top1_acc", "top5_acc", "loss", "pred_cos_sim", "pred_l1_err", "pred_l2_err", "pred_ce_loss",
           "pred_kl_div", "pred_agreement", "recovered_acc", "criticality", "criticality_ci")
# elapsed_seconds: wall-clock seconds from the start of the evaluation pass that measured the row (the local run,
# or the Ray task) until the row was finished; databases written before it was named so call it "seconds"
RESULT_COLUMNS = ("layer", "layer_index", "layer_type", "unit", "reset", "trial", *METRICS, "n_samples",
                  "elapsed_seconds")
UNIT_COLUMN = "unit TEXT NOT NULL DEFAULT 'layer'"  # "layer" or "block"; databases from before blocks lack it
# SQLite has no NaN (it stores NULL): the metrics of a row that came out NaN or infinite are named here, so a
# non-finite measurement is recorded as such and never mistaken for a missing value. Older databases lack it.
NONFINITE_COLUMN = "nonfinite TEXT"
WRITER_STALE_SECONDS = 30 * 60  # a writer on another host that has not saved progress for this long is gone
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
    elapsed_seconds REAL,
    created TEXT NOT NULL,
    {NONFINITE_COLUMN},
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
CREATE TABLE IF NOT EXISTS writers (
    model_id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    since TEXT NOT NULL,
    heartbeat REAL NOT NULL
);
"""
TABLES = ("runs", "results", "partial")  # what makes a file a layercrit results database


def _oneline(text: str, limit: int = 160) -> str:
    """``text`` as one printable line (damaged files put anything into error messages)."""
    text = "".join(c if c.isprintable() else " " for c in str(text))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _cause(e: sqlite3.Error) -> str:
    """What an sqlite3 error means for the user's file, in words."""
    name = getattr(e, "sqlite_errorname", "") or ""
    text = _oneline(str(e))
    if name.startswith("SQLITE_FULL") or "disk is full" in text:
        return f"{os.strerror(28)} (the disk is full)"
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return "it is read-only (the file, its folder or the file system)"
    if name.startswith("SQLITE_IOERR") or "disk I/O error" in text:
        return "disk I/O error (a failing, full or read-only disk)"
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text or "not a database" in text:
        return f"it is damaged or not an SQLite database ({text})"
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
        return "it cannot be opened (a missing, unreadable or read-only folder)"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return "another process holds it locked"
    return text


def _alive(host: str, pid: int, heartbeat: float) -> bool:
    """Whether the writer (host, pid) that last saved progress at ``heartbeat`` still runs."""
    if host != socket.gethostname():
        return time.time() - heartbeat < WRITER_STALE_SECONDS
    if pid == os.getpid():
        return False  # this process: an earlier run of it that stopped (the same process cannot race itself)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return False
    return True


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ResultStore:
    """A results database (SQLite): one run per model id, its rows, baselines and saved progress. Safe to
    reopen: resuming is just opening the same file again; a run opened again with another model, data or
    settings is refused.

    :func:`layercrit.measure` and :func:`layercrit.measure_models` write it (``store=``);
    :func:`layercrit.export`, ``layercrit.analysis.load_results`` and ``layercrit report`` read it.

    Args:
        path: the database file.
        create: open for writing, creating the file if missing (default); False: read-only, the file is never
            changed.

    Examples:
        >>> import os, tempfile
        >>> import layercrit as lc
        >>> path = os.path.join(tempfile.mkdtemp(), "study.db")
        >>> with lc.ResultStore(path) as store:
        ...     len(store.results())
        0
    """

    def __init__(self, path: str | Path, *, create: bool = True):
        """Open ``path``: with ``create`` for writing (created if missing); else read-only, and the file is
        never changed (no schema is added to a file that is only read). Either way the file is checked
        (``PRAGMA quick_check``) before use: a damaged database is one error naming it."""
        self.path = Path(path)
        self.readonly = not create
        self._token = uuid.uuid4().hex  # this store's claim on the models it writes (table writers)
        self._claimed: set[str] = set()
        self._open = False
        if self.path.is_dir():
            raise ConfigError(f"{self.path} is a folder, not a results database: check {{db}}")
        if not create and not self.path.is_file():
            raise ConfigError(f"results database not found: {self.path}: check {{db}}")
        if create and not self.path.parent.is_dir():
            raise ConfigError(f"folder for {{db}} does not exist: {self.path.parent}: create it first")
        if create:
            self._check_writable()
        existed = self.path.is_file() and self.path.stat().st_size > 0
        try:
            if create:
                self.conn = sqlite3.connect(str(self.path), timeout=30)
            else:
                self.conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
            self._open = True
            if existed:
                self._check_integrity()
            if create:
                self.conn.executescript(_SCHEMA)
                self._migrate()
            else:
                self._check_tables()
        except LayercritError:
            self.close()
            raise
        except UnicodeDecodeError as e:
            self.close()
            raise ConfigError(f"{self.path} is damaged ({_oneline(str(e))}): restore it from a copy, or choose "
                              "another {db}") from None
        except sqlite3.DatabaseError as e:
            self.close()
            if not existed or getattr(e, "sqlite_errorname", "").startswith(("SQLITE_FULL", "SQLITE_READONLY",
                                                                              "SQLITE_IOERR", "SQLITE_CANTOPEN")):
                raise ConfigError(f"cannot {'write' if create else 'read'} the results database {self.path}: "
                                  f"{_cause(e)}: choose another {{db}} or fix the disk") from None
            raise ConfigError(f"{self.path} is not a readable layercrit results database ({_cause(e)}): "
                              "choose another {db}, or restore it from a copy") from None

    def _check_writable(self) -> None:
        """The database (and its folder, where SQLite keeps its journal) can be written."""
        folder = self.path.parent
        if not os.access(folder, os.W_OK | os.X_OK):
            why = "is on a read-only file system" if _read_only_fs(folder) else "is not writable"
            raise ConfigError(f"cannot write the results database {self.path}: its folder {why}: "
                              "choose another {db}")
        if self.path.exists() and not os.access(self.path, os.R_OK | os.W_OK):
            raise ConfigError(f"cannot write the results database {self.path}: the file is read-only or unreadable: "
                              "make it writable or choose another {db}")

    def _check_integrity(self) -> None:
        rows = self.conn.execute("PRAGMA quick_check").fetchall()
        problems = [_oneline(str(r[0]).replace("*** in database main ***", "")) for r in rows
                    if r and r[0] != "ok"]
        problems = [p for p in problems if p]
        if problems or (rows and rows[0][0] != "ok"):
            shown = "; ".join(problems[:2]) + (f" (+{len(problems) - 2} more)" if len(problems) > 2 else "")
            raise ConfigError(f"{self.path} is damaged ({shown}): restore it from a copy, or choose another {{db}}")

    def _check_tables(self) -> None:
        names = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not names:
            raise LayercritError(f"{self.path} holds no results yet (an empty database): run `layercrit measure` first")
        missing = [t for t in TABLES if t not in names]
        if missing:
            raise ConfigError(f"{self.path} is not a layercrit results database (no table {', '.join(missing)}): "
                              "check {db}")

    @contextlib.contextmanager
    def _reading(self):
        """One error naming the file for a database whose contents cannot be decoded."""
        try:
            yield
        except LayercritError:
            raise
        except (sqlite3.Error, pd.errors.DatabaseError, UnicodeDecodeError, ValueError, OverflowError) as e:
            cause = _cause(e) if isinstance(e, sqlite3.Error) else _oneline(str(e))
            raise ConfigError(f"{self.path} is damaged ({cause}): restore it from a copy, or choose another "
                              "{db}") from None

    @contextlib.contextmanager
    def _writing(self, what: str = "write to"):
        """One error naming the file and the cause for any SQLite failure while writing."""
        try:
            yield
        except sqlite3.IntegrityError as e:
            raise LayercritError(f"cannot {what} {self.path}: {e}: another process may be writing the same model; "
                                 "rerun to resume") from None
        except sqlite3.DatabaseError as e:
            raise LayercritError(f"cannot {what} the results database {self.path}: {_cause(e)}: the rows committed "
                                 "so far are kept; fix the disk and rerun to resume") from None

    def _migrate(self) -> None:
        """Bring a database written by an earlier layercrit up to this schema."""
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(results)")}
        if "seconds" in columns and "elapsed_seconds" not in columns:  # the column's name before it said what it is
            try:
                with self.conn:
                    self.conn.execute("ALTER TABLE results RENAME COLUMN seconds TO elapsed_seconds")
            except sqlite3.OperationalError as e:
                if "no such column" not in str(e) and "duplicate column" not in str(e):  # another process did it
                    raise LayercritError(f"cannot update {self.path} to this layercrit's schema ({_cause(e)}): "
                                         "make the file writable once") from None
        # "unit": written before block units existed (every row is a layer); "nonfinite": before it was recorded
        for name, column in (("unit", UNIT_COLUMN), ("nonfinite", NONFINITE_COLUMN)):
            if name in columns:
                continue
            try:
                with self.conn:
                    self.conn.execute(f"ALTER TABLE results ADD COLUMN {column}")
            except sqlite3.OperationalError as e:
                if "duplicate column" not in str(e):  # another process migrated it just now: fine
                    raise LayercritError(f"cannot update {self.path} to this layercrit's schema ({_cause(e)}): "
                                         "make the file writable once") from None

    def close(self) -> None:
        if not self._open:
            return
        if self._claimed and not self.readonly:
            with contextlib.suppress(sqlite3.Error):
                with self.conn:
                    self.conn.execute("DELETE FROM writers WHERE token = ?", (self._token,))
        self.conn.close()
        self._open = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- writing -------------------------------------------------------------------------
    def open_run(self, model_id: str, *, spec: str, category: str | None, weights_sha256: str,
                 data_fingerprint: str, identity: dict, config: dict, versions: dict,
                 n_total: int | None = None) -> int:
        """Return the run id for ``model_id``, creating it, or check that a resume matches it.

        The caller becomes the model's only writer in this database until it finishes or closes the
        store: another process measuring the same model id here at the same time is refused at once.
        The run's saved progress is checked first (``n_total``: the run's image count), so a damaged
        database is refused before anything is written to it."""
        with self._writing("open a run in"):
            self.conn.execute("BEGIN IMMEDIATE")  # check and claim in one step: two writers cannot both pass
            try:
                run_id = self._open_run(model_id, spec=spec, category=category, weights_sha256=weights_sha256,
                                        data_fingerprint=data_fingerprint, identity=identity, config=config,
                                        versions=versions)
                self.partial_states(run_id, n_total)
                self._claim(model_id)
            except BaseException:
                self.conn.rollback()
                raise
            self.conn.commit()
        return run_id

    def _claim(self, model_id: str) -> None:
        row = self.conn.execute("SELECT token, host, pid, since, heartbeat FROM writers WHERE model_id = ?",
                                (model_id,)).fetchone()
        if row is not None and row[0] != self._token and _alive(row[1], int(row[2]), float(row[4])):
            raise BusyError(
                f"model id '{model_id}' is being measured into {self.path} by another process right now (pid {row[2]} "
                f"on {row[1]}, since {row[3]}): wait for it to finish (a rerun then skips its rows), or use another "
                "{name} or {db}")
        self.conn.execute("INSERT OR REPLACE INTO writers (model_id, token, host, pid, since, heartbeat) "
                          "VALUES (?, ?, ?, ?, ?, ?)",
                          (model_id, self._token, socket.gethostname(), os.getpid(), _now(), time.time()))
        self._claimed.add(model_id)

    def _open_run(self, model_id: str, *, spec, category, weights_sha256, data_fingerprint, identity, config,
                  versions) -> int:
        row = self.conn.execute("SELECT run_id, identity, category FROM runs WHERE model_id = ?",
                                (model_id,)).fetchone()
        if row is not None:
            run_id, stored_json, stored_category = row
            try:
                stored = json.loads(stored_json)
                if not isinstance(stored, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                raise ConfigError(f"{self.path} is damaged: the stored configuration of model '{model_id}' is not "
                                  f"valid JSON ({e}): restore the database from a copy, or use another {{db}}") from None
            diff = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
            if diff:
                shown = "; ".join(f"{k}: stored {_short(stored.get(k))}, now {_short(identity.get(k))}" for k in diff)
                raise ConfigError(
                    f"model id '{model_id}' is already in {self.path} with a different configuration ({shown}): "
                    "use another {name} or another {db}"
                )
            if category and category != stored_category:
                self.conn.execute("UPDATE runs SET category = ? WHERE run_id = ?", (category, run_id))
            return run_id
        cur = self.conn.execute(
            "INSERT INTO runs (model_id, model_spec, category, weights_sha256, data_fingerprint, identity,"
            " config, versions, started) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (model_id, spec, category, weights_sha256, data_fingerprint, json.dumps(identity, sort_keys=True),
             json.dumps(config, sort_keys=True), json.dumps(versions, sort_keys=True), _now()))
        if cur.lastrowid is None:
            raise LayercritError(f"could not add model '{model_id}' to {self.path}: rerun")
        return cur.lastrowid

    def set_baseline(self, run_id: int, metrics: dict, n_samples: int) -> None:
        sets = ", ".join(f"base_{m} = ?" for m in BASELINE_METRICS)
        with self._writing(), self.conn:
            self.conn.execute(f"UPDATE runs SET {sets}, base_n_samples = ? WHERE run_id = ?",
                              (*[metrics[m] for m in BASELINE_METRICS], n_samples, run_id))

    def add_result(self, run_id: int, row: dict) -> None:
        """Insert one (layer, reset, trial) row and commit it at once."""
        self.save_progress(run_id, [], [row])

    def save_progress(self, run_id: int, partial: list[tuple[tuple[str, str, int], dict]], finished: list[dict]) -> None:
        """In one transaction: update running sums of units in progress, insert finished rows.

        A row whose key is already there (committed by an earlier writer of the same run) is kept as it
        is: rows are deterministic, so both are the same measurement."""
        cols = ("run_id", *RESULT_COLUMNS, "created", "nonfinite")
        now = _now()
        with self._writing(), self.conn:
            self._heartbeat(run_id)
            self.conn.executemany(
                "INSERT OR REPLACE INTO partial (run_id, layer, reset, trial, n_samples, state) VALUES (?, ?, ?, ?, ?, ?)",
                [(run_id, *key, state["n"], json.dumps(state)) for key, state in partial])
            self.conn.executemany(f"INSERT OR IGNORE INTO results ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                                  [(run_id, *[row[c] for c in RESULT_COLUMNS], now, nonfinite_metrics(row))
                                   for row in finished])
            self.conn.executemany("DELETE FROM partial WHERE run_id = ? AND layer = ? AND reset = ? AND trial = ?",
                                  [(run_id, r["layer"], r["reset"], r["trial"]) for r in finished])

    def _heartbeat(self, run_id: int) -> None:
        """Record that this store's writer is alive; stop if another process took its model over."""
        if not self._claimed:
            return
        row = self.conn.execute("SELECT model_id FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None or row[0] not in self._claimed:
            return
        cur = self.conn.execute("UPDATE writers SET heartbeat = ? WHERE model_id = ? AND token = ?",
                                (time.time(), row[0], self._token))
        if cur.rowcount == 0:
            raise LayercritError(f"another process has taken over measuring '{row[0]}' in {self.path} (this one "
                                 "seemed gone): stopping here; the rows committed so far are kept")

    def partial_states(self, run_id: int, n_total: int | None = None) -> dict[tuple[str, str, int], dict]:
        """The saved running sums of units in progress, each checked: a damaged one is an error naming
        the file (never silently dropped, which would leave a unit unfinished)."""
        with self._reading():
            rows = self.conn.execute("SELECT layer, reset, trial, n_samples, state FROM partial WHERE run_id = ?",
                                     (run_id,)).fetchall()
        out = {}
        for layer, reset, trial, n_samples, state in rows:
            problem = _partial_problem(state, n_samples, n_total)
            if problem:
                raise LayercritError(
                    f"{self.path} is damaged: the saved progress of ({layer}, {reset}, trial {trial}) {problem}; "
                    f"it only holds progress, so delete it and rerun: sqlite3 {self.path} "
                    f"\"DELETE FROM partial WHERE run_id = {run_id}\"")
            out[(layer, reset, int(trial))] = json.loads(state)
        return out

    def finish_run(self, run_id: int) -> None:
        with self._writing(), self.conn:
            self.conn.execute("UPDATE runs SET finished = ? WHERE run_id = ?", (_now(), run_id))
            row = self.conn.execute("SELECT model_id FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is not None and row[0] in self._claimed:
                self.conn.execute("DELETE FROM writers WHERE model_id = ? AND token = ?", (row[0], self._token))
                self._claimed.discard(row[0])

    # --- reading -------------------------------------------------------------------------
    def done_keys(self, run_id: int) -> set[tuple[str, str, int]]:
        with self._reading():
            rows = self.conn.execute("SELECT layer, reset, trial FROM results WHERE run_id = ?", (run_id,)).fetchall()
            return {(layer, reset, int(trial)) for layer, reset, trial in rows}

    def runs(self) -> pd.DataFrame:
        with self._reading():
            return pd.read_sql_query("SELECT * FROM runs ORDER BY run_id", self.conn)

    def results(self, model_ids: list[str] | None = None, unit: str | None = None) -> pd.DataFrame:
        """Tidy table: one row per (model, layer, reset, trial), with the run's model info.

        ``unit`` keeps only "layer" or only "block" rows (default: both)."""
        query = ("SELECT r.model_id, r.category, r.model_spec, x.* , r.base_top1_acc FROM results x "
                 "JOIN runs r USING (run_id)")
        where: list[str] = []
        params: tuple[str, ...] = ()
        if model_ids:
            where.append(f"r.model_id IN ({', '.join('?' * len(model_ids))})")
            params = tuple(model_ids)
        if unit:
            where.append("x.unit = ?")
            params += (unit,)
        if where:
            query += " WHERE " + " AND ".join(where)
        with self._reading():
            df = pd.read_sql_query(query + " ORDER BY x.run_id, x.reset, x.trial, x.layer_index", self.conn,
                                   params=params)
        df = df.drop(columns=["created"]).rename(columns={"seconds": "elapsed_seconds"})  # read-only older files
        for m in (*METRICS, "base_top1_acc"):  # all NULL (a metric undefined for the compared output): NaN, not None
            if m in df.columns and df[m].isna().all():
                df[m] = df[m].astype(float)
        return df


def nonfinite_metrics(row: dict) -> str | None:
    """Comma-separated names of the row's metrics that are NaN or infinite (None: all finite). A metric that is
    None is undefined (class metrics where features are compared) and stored as NULL without being named."""
    bad = [m for m in METRICS if isinstance(row.get(m), float) and not math.isfinite(row[m])]
    return ",".join(bad) or None


def _partial_problem(state, n_samples, n_total: int | None) -> str | None:
    """Why a saved partial-progress row cannot be used, or None."""
    try:
        value = json.loads(state)
    except (TypeError, ValueError) as e:
        return f"is not valid JSON ({e})"
    if not isinstance(value, dict):
        return "is not a JSON object"
    n = value.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        return f"has no valid image count (n = {n!r})"
    if n != n_samples:
        return f"has an image count {n} that differs from its n_samples column {n_samples!r}"
    if n_total is not None and n >= n_total:
        return f"has an image count {n} beyond what a run on {n_total} images leaves unfinished"
    bad = [k for k, v in value.items() if k != "n" and (isinstance(v, bool) or not isinstance(v, (int, float)))]
    if bad:
        return f"holds non-numeric sums ({', '.join(map(str, bad[:3]))})"
    return None


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 16 else text[:12] + "..."
