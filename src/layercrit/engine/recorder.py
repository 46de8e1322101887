"""``Recorder``: the one place where a measurement meets its results database.

It opens (or resumes) a model's run, says which jobs are still to do (restoring the running sums
of jobs saved mid-way on the same batch grid), saves running sums and commits finished rows, and
finishes the run (the unmodified model's metrics, the end time). Every executor records through
it, so a row is written once, whoever computed it. Without a database it only collects the rows.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd

from ..errors import ConfigError, LayercritError
from ..provenance import package_versions
from ..store import RESULT_COLUMNS, ResultStore
from ..store.sqlite import BASELINE_METRICS, METRICS, nonfinite_metrics
from .batching import resumed_batch_size
from .calibration import resumed_temperature_error
from .metrics import ResetMetrics
from .plan import Job, JobKey, MeasurePlan, Row


@dataclass
class Run:
    """One model's run as the recorder tracks it (light: no model, no images)."""

    run_id: int | None  # None without a database
    model_id: str
    n_samples: int
    keys: list[JobKey]  # every job of the plan, in plan order
    todo: list[Job]  # the jobs not yet recorded, with their saved running sums
    stored_baseline: dict[str, float] | None = None  # the unmodified model's metrics, if already recorded
    rows: list[Row] = field(default_factory=list)  # rows recorded by this process
    committed: set[JobKey] = field(default_factory=set)
    category: str | None = None
    spec: str | None = None  # the model spec, as recorded


# The columns of the table measure() returns, with or without a database: the model, one row's key and
# metrics (store.RESULT_COLUMNS), which metrics are not finite (None: all are), the unmodified model's top-1.
TIDY_COLUMNS = ("model_id", "category", "model_spec", *RESULT_COLUMNS, "nonfinite", "base_top1_acc")


def _key(row: Row) -> JobKey:
    return row["layer"], row["reset"], row["trial"]


class Recorder:
    """Writes one or more runs into ``store`` (a :class:`ResultStore`, or None to keep rows in memory)."""

    def __init__(self, store: ResultStore | None):
        self.store = store

    @classmethod
    @contextlib.contextmanager
    def open(cls, store: ResultStore | str | os.PathLike[str] | None) -> Iterator[Recorder]:
        """A recorder on ``store``: a path is opened (and closed on leaving), a ResultStore used as it is."""
        if store is None or isinstance(store, ResultStore):
            yield cls(store)
            return
        with ResultStore(os.fspath(store)) as opened:
            yield cls(opened)

    def start(self, plan: MeasurePlan) -> Run:
        """Open (or resume) the plan's run; jobs with saved running sums on the same batch grid continue."""
        keys = [j.key for j in plan.jobs]
        if self.store is None:
            return Run(None, plan.model_id, plan.n_samples, keys, list(plan.jobs), category=plan.category,
                       spec=plan.bundle.spec)
        run_id = self.store.open_run(plan.model_id, spec=plan.bundle.spec, category=plan.category,
                                     weights_sha256=plan.weights_sha256, data_fingerprint=plan.data_fingerprint,
                                     identity=plan.identity, config=plan.record, versions=package_versions(),
                                     n_total=plan.n_samples)
        runs = self.store.runs()
        stored = runs.loc[runs["run_id"] == run_id, "config"]
        conflict = resumed_temperature_error(stored.iloc[0] if len(stored) else None, plan.record)
        if conflict is not None:
            raise ConfigError(f"{plan.model_id} in {self.store.path}: {conflict}", ("calibration_samples", "seed"))
        done, partial = self.store.done_keys(run_id), self.store.partial_states(run_id, plan.n_samples)
        kept = resumed_batch_size(plan.record, runs, run_id, bool(partial))
        if kept is not None:  # --batch-size auto continues on the interrupted run's batch grid
            plan.config, plan.record["batch_size"] = plan.config.replace(batch_size=kept), kept
        todo = [j for j in plan.jobs if j.key not in done]
        for j in todo:
            state = partial.get(j.key)
            if state is not None and state["n"] % plan.config.batch_size == 0:  # same batch grid only
                j.metrics = ResetMetrics.from_state(state)
        return Run(run_id, plan.model_id, plan.n_samples, keys, todo, self._stored_baseline(run_id, plan.n_samples),
                   category=plan.category, spec=plan.bundle.spec)

    def save(self, run: Run, saved: list[tuple[JobKey, dict]], finished: list[Row]) -> None:
        """In one transaction: the running sums of jobs in progress, and the rows of jobs just finished."""
        keys = [_key(r) for r in finished]
        if len(set(keys)) != len(keys) or run.committed.intersection(keys):
            raise LayercritError(f"{run.model_id}: a result was computed twice ({', '.join(map(str, keys[:3]))}): "
                                 "this is a bug; rerun to resume")
        if self.store is not None and run.run_id is not None:
            self.store.save_progress(run.run_id, saved, finished)
        run.committed.update(keys)
        run.rows.extend(finished)

    def finish(self, run: Run, base: dict[str, float]) -> pd.DataFrame:
        """Record the unmodified model's metrics and the end of the run; return the plan's rows as a
        tidy table (with a database: every row of the plan's jobs, including those of earlier runs), in
        plan order, with the columns :data:`TIDY_COLUMNS` whether or not there is a database."""
        order = {k: i for i, k in enumerate(run.keys)}
        if self.store is not None and run.run_id is not None:
            self.store.set_baseline(run.run_id, base, run.n_samples)
            self.store.finish_run(run.run_id)
            table = self.store.results([run.model_id])
            keep = [k in order for k in zip(table["layer"], table["reset"], table["trial"])]
            table = table[keep]
            rank = [order[k] for k in zip(table["layer"], table["reset"], table["trial"])]
            table = table.iloc[sorted(range(len(table)), key=rank.__getitem__)]
        else:
            rows = sorted(run.rows, key=lambda r: order[_key(r)])
            table = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
            table["model_id"] = run.model_id
            table["category"] = run.category
            table["model_spec"] = run.spec
            table["nonfinite"] = [nonfinite_metrics(r) for r in rows]
            table["base_top1_acc"] = base["top1_acc"]
            for m in METRICS:  # None (a metric undefined for the compared output) as NaN, as from the database
                table[m] = pd.to_numeric(table[m]).astype(float)
        return table[list(TIDY_COLUMNS)].reset_index(drop=True)

    def _stored_baseline(self, run_id: int, n_samples: int) -> dict[str, float] | None:
        """The unmodified model's metrics as the database holds them for this run, if measured on these images."""
        assert self.store is not None
        runs = self.store.runs()
        row = runs[runs["run_id"] == run_id]
        if row.empty or row.iloc[0]["base_n_samples"] != n_samples or pd.isna(row.iloc[0]["base_top1_acc"]):
            return None
        return {m: float(row.iloc[0][f"base_{m}"]) for m in BASELINE_METRICS}
