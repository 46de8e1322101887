"""The driver side: ``RayExecutor`` splits plans into tasks, submits them, records what returns.

Work is split into *tasks* of (model, group of units, trial). A task loads the model once (rebuilt
from its source inside the worker, or shipped once through the object store), gets the evaluation
data once (shipped once through the object store, or read from a path every worker sees) and
evaluates its jobs with the engine's own :func:`~layercrit.engine.evaluate` (cached engine,
adaptive sampling, the same batches in the same order), so its rows are the local executor's rows.

The driver is the only writer of the results database, through the engine's
:class:`~layercrit.engine.Recorder`: it opens (or resumes) each model's run, submits tasks only for
jobs not yet recorded, and commits a task's rows in one transaction as the task returns. Interrupt
it and rerun: finished rows are kept, nothing is repeated. A task whose worker dies is retried by
Ray (``max_retries``); after that, or on an error inside the task, the driver still collects every
other task, then raises one :class:`LayercritError` naming the failing units.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from ...engine import Job, JobKey, MeasurePlan, Recorder, Run
from ...errors import ConfigError, LayercritError, Message
from .options import RayOptions, import_ray
from .payload import DataPayload, JobPayload, ModelPayload, ShippedData, TaskPayload, TaskResult
from .worker import run_task

log = logging.getLogger("layercrit")

FORWARDED_ENV_PREFIX = "LAYERCRIT_"  # the driver's LAYERCRIT_* variables reach every task (e.g. LAYERCRIT_CACHE)


@dataclass(frozen=True)
class Placement:
    """What each task of a plan asks Ray for, and the torch threads it computes with."""

    device: str  # "cpu" or "cuda"
    gpus: float
    cpus: float
    threads: int


@dataclass
class Task:
    plan: int  # index of its plan (model)
    label: str  # names the model, units, resets and trial, for messages
    keys: list[JobKey]
    payload: TaskPayload


@dataclass
class _PlanState:
    run: Run
    tasks: int = 0
    done: int = 0
    failed: int = 0
    base: dict[str, float] | None = None
    table: pd.DataFrame | None = None


class RayExecutor:
    """Spreads each plan's jobs over a Ray cluster in tasks of (unit group, trial); same rows as local."""

    def __init__(self, options: RayOptions | None = None):
        self.options = options or RayOptions()
        import_ray()  # not installed: fail before anything is loaded

    def check(self, device: str | torch.device) -> torch.device:
        self.options.gpus_for(device)
        return torch.device("cpu")  # the driver prepares the plans on its CPU; Ray places the tasks

    def run(self, plans: Iterable[MeasurePlan], recorder: Recorder, *, progress: bool) -> list[pd.DataFrame]:
        ray = import_ray()
        started = _connect(self.options.address)
        session = _Session(self, ray, recorder, progress)
        try:
            for plan in plans:
                session.submit(plan)
                del plan  # the workers have what they need: the driver's model and images can go
                session.drain(block=False)
            session.drain(block=True)
        finally:
            session.close()
            if started:
                ray.shutdown()
        return session.tables()

    def _model(self, plan: MeasurePlan, ray: Any) -> ModelPayload:
        """Rebuilt inside the workers where the bundle knows its source, else shipped once."""
        bundle = plan.bundle
        if bundle.source is not None:
            source = bundle.source.portable()
            return ModelPayload(repr((source, plan.weights_sha256)), bundle.spec, plan.weights_sha256, source=source)
        return ModelPayload(repr((bundle.spec, plan.weights_sha256)), bundle.spec, plan.weights_sha256,
                            ref=ray.put(bundle))

    def _data(self, plan: MeasurePlan, ray: Any, refs: dict[str, Any]) -> DataPayload:
        """Loaded by the workers from the folder (data mode "path"), else shipped once per data set."""
        data = plan.data
        if self.options.data_mode == "path":
            if data.origin is not None:
                return DataPayload(data.fingerprint, origin=data.origin)
            log.warning(f"{plan.model_id}: in-memory data has no path: shipping it through the object store")
        if data.fingerprint not in refs:
            refs[data.fingerprint] = ray.put(ShippedData(data.images.contiguous().numpy(), data.labels.numpy(),
                                                         list(data.classes), data.source))
        return DataPayload(data.fingerprint, ref=refs[data.fingerprint])


class _Session:
    """One ``RayExecutor.run``: the tasks in flight, each plan's progress, the failures so far.

    :meth:`submit` turns a plan into tasks and starts them; :meth:`collect` records what one task returned
    (through the recorder, as it returns); :meth:`drain` collects whatever has finished (or, with ``block``,
    everything); :meth:`close` stops what is still running; :meth:`tables` gives each plan's table or raises
    one error naming the failed tasks.
    """

    def __init__(self, executor: RayExecutor, ray: Any, recorder: Recorder, progress: bool):
        self.executor, self.options, self.ray, self.recorder = executor, executor.options, ray, recorder
        self.remote = ray.remote(run_task)
        self.env = forwarded_env()
        self.local_threads = torch.get_num_threads()
        self.placements: dict[str, Placement] = {}
        self.states: list[_PlanState] = []
        self.pending: dict[Any, Task] = {}  # ray.ObjectRef -> Task
        self.failures: list[str] = []
        self.data_refs: dict[str, Any] = {}
        self.bar = tqdm(total=0, desc="ray tasks", unit="task", disable=not progress, dynamic_ncols=True)

    def submit(self, plan: MeasurePlan) -> None:
        """Open (or resume) the plan's run and start a task for each group of jobs still to do."""
        key = str(plan.device)
        if key not in self.placements:
            self.placements[key] = _placement(self.options, key, self.ray, self.local_threads)
        placement = self.placements[key]
        run = self.recorder.start(plan)
        state = _PlanState(run)
        self.states.append(state)
        if not run.todo:  # a finished model: nothing to submit, if its baseline is recorded
            state.base = run.stored_baseline
        tasks = make_tasks(len(self.states) - 1, plan, run.todo, placement, self.options.layers_per_task,
                           self.executor._model(plan, self.ray), self.executor._data(plan, self.ray, self.data_refs),
                           baseline=state.base is None)
        run.todo = []  # the tasks carry what the jobs need; the driver keeps only the keys
        state.tasks = len(tasks)
        call_options: dict[str, Any] = {"num_cpus": placement.cpus, "num_gpus": placement.gpus,
                                        "max_retries": self.options.max_retries, "retry_exceptions": False}
        if self.env:
            call_options["runtime_env"] = {"env_vars": self.env}
        for task in tasks:
            self.pending[self.remote.options(**call_options).remote(task.payload)] = task
        self._finish(state)
        self.bar.total += len(tasks)
        self._postfix()
        self.bar.refresh()

    def collect(self, ref: Any) -> None:
        """Record the rows of the finished task ``ref`` (or note its failure; the other tasks go on)."""
        task = self.pending.pop(ref)
        state = self.states[task.plan]
        try:
            out: TaskResult = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:
            state.failed += 1
            self.failures.append(_failure_text(task, e, self.options.max_retries))
            if self.pending:
                log.warning(Message(f"ray task failed: {self.failures[-1]}; the other tasks go on"))
        else:
            if sorted(out.keys()) != sorted(task.keys):
                raise LayercritError(f"ray task returned rows for other units than asked ({task.label}): "
                                     "this is a bug; rerun to resume")
            self.recorder.save(state.run, [], out.rows)
            state.base = state.base or out.base
            state.done += 1
            self._finish(state)
        self._postfix()
        self.bar.update(1)

    def drain(self, block: bool) -> None:
        """Collect every finished task; with ``block``, wait until none is left."""
        while self.pending:
            ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=None if block else 0)
            if not ready:
                return
            self.collect(ready[0])

    def close(self) -> None:
        """Stop the tasks still running (interrupted: a rerun submits them again). force=True ends their workers:
        a task interrupted inside torch.fx tracing (which patches Module.__call__ process-wide) or mid-reset
        would leave its worker's torch or cached model changed for the tasks it runs next."""
        for ref in list(self.pending):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # already finished or gone
                pass
        self.bar.close()

    def tables(self) -> list[pd.DataFrame]:
        """Each plan's table, in order; one error naming the failed tasks if any failed."""
        if self.failures:
            more = f" (and {len(self.failures) - 1} more task(s))" if len(self.failures) > 1 else ""
            text = (f"ray task failed for {self.failures[0]}{more}; the rows of every other task are saved: fix the "
                    "cause and rerun the same command to resume")
            raise ConfigError(text, ("max_retries",) if "{max_retries}" in text else ())
        tables = [s.table for s in self.states]
        assert all(t is not None for t in tables)  # every task returned: every plan finished
        return [t for t in tables if t is not None]

    def _finish(self, state: _PlanState) -> None:
        if state.done == state.tasks and state.base is not None:
            state.table = self.recorder.finish(state.run, state.base)

    def _postfix(self) -> None:
        running = [s for s in self.states if s.done + s.failed < s.tasks]
        complete = len(self.states) - len(running)
        parts = [f"{s.run.model_id} {s.done}/{s.tasks}" for s in running[:3]]
        if len(running) > 3:
            parts.append(f"+{len(running) - 3} more")
        if len(self.states) > 1:
            parts.insert(0, f"models {complete}/{len(self.states)} done")
        self.bar.set_postfix_str(", ".join(parts), refresh=False)


def _groups(items: list[str], size: int | None) -> Iterator[list[str]]:
    size = size or len(items) or 1
    for i in range(0, len(items), size):
        yield items[i:i + size]


def make_tasks(index: int, plan: MeasurePlan, todo: list[Job], placement: Placement, units_per_task: int | None,
               model: ModelPayload, data: DataPayload, baseline: bool = False) -> list[Task]:
    """Tasks of (unit group, trial) over the jobs still to do, units in forward order; with nothing to do
    and ``baseline``, one task that only measures the unmodified model."""
    resets = [r.portable() for r in plan.resets]

    def payload(jobs: list[JobPayload]) -> TaskPayload:
        return TaskPayload(model, data, resets, plan.config, placement.device, placement.threads, jobs)

    tasks = []
    for trial in sorted({j.trial for j in todo}):
        of_trial = [j for j in todo if j.trial == trial]
        names = list(dict.fromkeys(j.unit.name for j in sorted(of_trial, key=lambda j: j.unit.index)))
        for group in _groups(names, units_per_task):
            members = [j for j in of_trial if j.unit.name in set(group)]
            reset_names = list(dict.fromkeys(j.reset.name for j in members))
            shown = group[0] if len(group) == 1 else f"{group[0]} .. {group[-1]} ({len(group)} layers)"
            label = f"model {plan.model_id}, layers {shown}, reset {'/'.join(reset_names)}, trial {trial}"
            jobs = [JobPayload(j.unit, j.reset.name, j.trial, j.metrics.state() if j.metrics.n else None)
                    for j in members]
            tasks.append(Task(index, label, [j.key for j in members], payload(jobs)))
    if not tasks and baseline:  # nothing left to measure, but the unmodified model's metrics are missing
        tasks.append(Task(index, f"model {plan.model_id}, unmodified model only", [], payload([])))
    return tasks


def _connect(address: str | None) -> bool:
    """Join or start Ray; True if this call started it (and so must shut it down)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    try:
        if address is None:
            ray.init(include_dashboard=False, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = "a local Ray instance" if address is None else f"the Ray cluster at {address}"
        raise ConfigError(f"could not start or join {where} ({type(e).__name__}: {str(e).splitlines()[0][:160]}): "
                          "start one with `ray start --head`, or check {address}", ("address",)) from None
    return True


def _placement(options: RayOptions, device: str, ray: Any, local_threads: int) -> Placement:
    """CPUs, GPUs and torch threads of each task measuring on ``device``.

    On the CPU, float32 results depend in their last bits on torch's thread count (locally too), so a
    CPU task uses this process's count: what the local executor would use here, hence the same numbers.
    Its CPUs default to that count, capped at the largest node's (a task asking for more would never
    be scheduled). On GPUs the thread count does not change the numbers: threads = CPUs per task (default 1).
    """
    gpus = options.gpus_for(device)
    if gpus > 0:
        cpus = options.cpus_per_task or 1.0
        return Placement("cuda", gpus, cpus, max(1, int(cpus)))
    cpus_given = options.cpus_per_task
    if cpus_given is None:
        largest = max((n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1)
        cpus_given = float(max(1, min(local_threads, int(largest))))
    return Placement("cpu", 0.0, cpus_given, local_threads)


def forwarded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIX)}


def _failure_text(task: Task, error: Exception, max_retries: int) -> str:
    ray = import_ray()
    if isinstance(error, ray.exceptions.RayTaskError):
        cause = getattr(error, "cause", None)
        if isinstance(cause, LayercritError):
            return f"{task.label}: {cause}"
        what = cause if cause is not None else error
        return f"{task.label}: {type(what).__name__}: {str(what).strip().splitlines()[-1][:300] if str(what) else ''}"
    first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return (f"{task.label}: its worker died on every attempt ({max_retries + 1} in all, {{max_retries}} {max_retries}; "
            f"{type(error).__name__}: {first})")
