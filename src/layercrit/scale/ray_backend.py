"""The Ray backend: one measurement (or a whole study) spread over many GPUs and machines.

Work is split into *tasks* of (model, group of layers, trial). A task loads the model once
(rebuilt from its spec inside the worker, or shipped once through the object store), gets the
evaluation data once (shipped once through the object store, or read from a path every worker
sees) and evaluates its units with the engine's own loop (:func:`layercrit.engine.measure.evaluate_units`:
cached engine, adaptive sampling, the same batches in the same order), so its rows are the
local backend's rows. Workers keep the last model and data they loaded, so the next task of
the same model on that worker loads nothing.

The driver is the only writer of the results database: it opens (or resumes) each model's run,
submits tasks only for units not yet in the database, and commits a task's rows in one
transaction as the task returns. Interrupt it and rerun: finished rows are kept, nothing is
repeated. A task whose worker dies is retried by Ray (``max_retries``); after that, or on an
error inside the task, the driver still collects every other task, then raises one
:class:`LayercritError` naming the failing units.
"""
from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import pandas as pd
from tqdm.auto import tqdm

from ..errors import LayercritError

log = logging.getLogger("layercrit")

DATA_MODES = ("object_store", "path")
DEFAULTS = {"address": None, "gpus_per_task": None, "cpus_per_task": None, "layers_per_task": None,
            "max_retries": 3, "data_mode": "object_store"}
KILL_ONCE_ENV = "LAYERCRIT_TEST_KILL_ONCE"  # test hook: path of a marker file, see _maybe_die()
FORWARDED_ENV_PREFIX = "LAYERCRIT_"  # the driver's LAYERCRIT_* variables reach every task (e.g. LAYERCRIT_CACHE)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise LayercritError("--backend ray needs Ray: pip install 'layercrit[ray]' "
                             "(or pip install 'ray[default]>=2.9')") from None
    return ray


def check_ray_options(options: dict, device: str = "cpu") -> dict:
    """Validate the ray options of :func:`layercrit.measure`; return them complete (with defaults).

    ``address``: None starts a local Ray instance (all CPUs/GPUs of this machine), ``"auto"``
    joins the cluster this machine belongs to, or ``"HOST:PORT"`` / ``"ray://HOST:10001"``.
    ``gpus_per_task`` (default 1 with a cuda ``device``, else 0; fractions share a GPU),
    ``cpus_per_task`` (default: 1 on GPUs; on the CPU, this process's torch thread count, capped at the
    largest node's CPUs, see :func:`_task_threads`), ``layers_per_task`` (default None: all of a model's
    layers in one task per trial), ``max_retries`` (default 3: retries of a task whose worker died),
    ``data_mode``: ``"object_store"`` (default: the driver decodes the images once and ships them
    once through Ray's object store) or ``"path"`` (every worker loads the data folder itself,
    through ``$LAYERCRIT_CACHE/data``; both must be on a shared filesystem).
    """
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise LayercritError(f"unknown ray option(s) {', '.join(unknown)}: use {', '.join(DEFAULTS)}")
    opts = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    kind = str(device).split(":")[0]
    if kind not in ("cpu", "cuda"):
        raise LayercritError(f"--device {device} with --backend ray: use cpu or cuda (Ray assigns the GPUs)")
    if str(device) not in ("cpu", "cuda"):
        raise LayercritError(f"--device {device} with --backend ray: use cuda (Ray assigns each task its GPU)")
    if opts["gpus_per_task"] is None:
        opts["gpus_per_task"] = 1.0 if kind == "cuda" else 0.0
    try:
        opts["gpus_per_task"] = float(opts["gpus_per_task"])
        opts["cpus_per_task"] = None if opts["cpus_per_task"] is None else float(opts["cpus_per_task"])
    except (TypeError, ValueError):
        raise LayercritError("--gpus-per-task and --cpus-per-task must be numbers") from None
    if opts["gpus_per_task"] < 0 or (opts["cpus_per_task"] is not None and opts["cpus_per_task"] <= 0):
        raise LayercritError(f"--gpus-per-task must be >= 0 and --cpus-per-task > 0, got "
                             f"{opts['gpus_per_task']:g} and {opts['cpus_per_task']}")
    if kind == "cuda" and opts["gpus_per_task"] == 0:
        raise LayercritError("--device cuda with --backend ray needs --gpus-per-task above 0 "
                             "(Ray gives a task only the GPUs it asks for)")
    if kind == "cpu" and opts["gpus_per_task"] > 0:
        raise LayercritError(f"--gpus-per-task {opts['gpus_per_task']:g} with --device cpu: "
                             "pass --device cuda to measure on the GPUs")
    if opts["layers_per_task"] is not None and (not isinstance(opts["layers_per_task"], int)
                                               or opts["layers_per_task"] < 1):
        raise LayercritError(f"--layers-per-task must be a whole number >= 1, got {opts['layers_per_task']}")
    if not isinstance(opts["max_retries"], int) or opts["max_retries"] < 0:
        raise LayercritError(f"--max-retries must be a whole number >= 0, got {opts['max_retries']}")
    if opts["data_mode"] not in DATA_MODES:
        raise LayercritError(f"unknown ray data mode '{opts['data_mode']}': use {' or '.join(DATA_MODES)}")
    _import_ray()
    return opts


# --- the worker side ---------------------------------------------------------------------------

_WORKER_CACHE: dict[str, tuple] = {}  # "model"/"data" -> (key, object): the last one of each, per worker process


def _maybe_die() -> None:
    """Test hook: with $LAYERCRIT_TEST_KILL_ONCE=<marker path>, the first task attempt to get here
    (the one that creates the marker) kills its own worker process, as a crash or OOM kill would."""
    marker = os.environ.get(KILL_ONCE_ENV)
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, f"{socket.gethostname()} pid {os.getpid()}\n".encode())
    os.close(fd)
    os._exit(1)


def _worker_model(spec: dict):
    from ..models import create_model

    key = spec["key"]
    cached = _WORKER_CACHE.get("model")
    if cached is not None and cached[0] == key:
        return cached[1]
    _WORKER_CACHE.pop("model", None)  # let the previous model go before loading the next
    if spec["kind"] == "spec":
        bundle = create_model(spec["spec"], **spec["options"])
    else:
        bundle = _get(spec["ref"][0])
    checksum = bundle.checksum()
    if checksum != spec["weights_sha256"]:
        raise LayercritError(
            f"worker on {socket.gethostname()} built {spec['spec']} with other weights than the driver "
            f"(sha256 {checksum[:12]}... vs {spec['weights_sha256'][:12]}...): every node must see the same "
            "checkpoint files (a shared filesystem or the same LAYERCRIT_CACHE contents)")
    _WORKER_CACHE["model"] = (key, bundle)
    return bundle


def _worker_data(spec: dict):
    import torch

    from ..data import EvalData, load_data

    key = spec["fingerprint"]
    cached = _WORKER_CACHE.get("data")
    if cached is not None and cached[0] == key:
        return cached[1]
    _WORKER_CACHE.pop("data", None)
    if spec["kind"] == "path":
        if not os.path.isdir(spec["path"]):
            raise LayercritError(f"data folder {spec['path']} is not visible on {socket.gethostname()}: put it on a "
                                 "filesystem every node mounts at the same path, or use the object store data mode")
        data = load_data(spec["path"], **spec["options"], progress=False, cache=True)
        if data.fingerprint != key:
            raise LayercritError(f"data folder {spec['path']} on {socket.gethostname()} holds other images than on "
                                 "the driver: every node must see the same files")
    else:
        shipped = _get(spec["ref"][0])
        images = shipped["images"]
        with warnings.catch_warnings():  # read-only shared memory: nothing writes into the images
            warnings.simplefilter("ignore", UserWarning)
            images = torch.from_numpy(images) if images.dtype.name == "uint8" else torch.tensor(images)
        data = EvalData(images, torch.tensor(shipped["labels"]), list(shipped["classes"]), key, shipped["source"])
    _WORKER_CACHE["data"] = (key, data)
    return data


def _get(ref):
    import ray

    return ray.get(ref)


def run_task(payload: dict) -> dict:
    """Evaluate one task's units; runs inside a Ray worker (plain Python: also callable without Ray)."""
    import torch

    from ..engine.measure import _Unit, evaluate_units, resolve_device
    from ..engine.metrics import ResetMetrics
    from ..resets import parse_reset

    start = time.perf_counter()
    torch.set_num_threads(payload["threads"])
    device = resolve_device(payload["device"])
    bundle = _worker_model(payload["model"])
    data = _worker_data(payload["data"])
    resets = {}
    for name, spec in payload["resets"]:  # the driver's names: a checkpoint path may be spelled differently here
        r = parse_reset(spec, factory=bundle.factory, seed=payload["seed"], trust_pickle=payload["trust_pickle"])
        r.name = name
        resets[name] = r
    units = []
    for layer, reset_name, trial, state in payload["units"]:
        u = _Unit(resets[reset_name], trial, layer)
        if state is not None:
            u.metrics = ResetMetrics.from_state(state)
        units.append(u)
    first = [True]

    def on_batch(saved, finished):
        if first[0]:
            first[0] = False
            _maybe_die()

    o = payload["engine"]
    rows, base = evaluate_units(bundle, data, units, batch_size=o["batch_size"], device=device, engine=o["engine"],
                                precision=o["precision"], target_ci=o["target_ci"],
                                channels_last=o["channels_last"], on_batch=on_batch)
    return {"rows": rows, "base": base, "host": socket.gethostname(), "pid": os.getpid(),
            "seconds": time.perf_counter() - start}


# --- the driver side ---------------------------------------------------------------------------

@dataclass
class _Task:
    plan: int  # index of its plan (model)
    label: str  # names the model, layers, resets and trial, for messages
    keys: list[tuple[str, str, int]]
    payload: dict


@dataclass
class _PlanState:
    plan: object
    run_id: int | None
    tasks: int = 0
    done: int = 0
    failed: int = 0
    rows: list[dict] = field(default_factory=list)
    base: dict | None = None
    committed: set = field(default_factory=set)


def _groups(items: list, size: int | None) -> Iterator[list]:
    size = size or len(items) or 1
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _make_tasks(index: int, plan, todo: list, opts: dict, model_spec: dict, data_spec: dict,
                baseline: bool = False) -> list[_Task]:
    """Tasks of (layer group, trial) over the units still to do, layers in forward order; with nothing
    to do and ``baseline``, one task that only measures the unmodified model."""
    in_order = list(dict.fromkeys(u.reset for u in plan.units))  # the Reset objects, in the order of reset_specs
    resets = [(r.name, _worker_reset(spec)) for r, spec in zip(in_order, plan.reset_specs)]
    common = {"model": model_spec, "data": data_spec, "resets": resets, "seed": plan.seed,
              "trust_pickle": plan.trust_pickle, "device": "cuda" if opts["gpus_per_task"] > 0 else "cpu",
              "threads": opts["threads"],
              "engine": {"batch_size": plan.batch_size, "engine": plan.engine, "precision": plan.precision,
                         "target_ci": plan.target_ci, "channels_last": plan.channels_last}}
    tasks = []
    for trial in sorted({u.trial for u in todo}):
        of_trial = [u for u in todo if u.trial == trial]
        layer_names = list(dict.fromkeys(u.layer.name for u in sorted(of_trial, key=lambda u: u.layer.index)))
        for group in _groups(layer_names, opts["layers_per_task"]):
            members = [u for u in of_trial if u.layer.name in set(group)]
            resets = list(dict.fromkeys(u.reset.name for u in members))
            shown = group[0] if len(group) == 1 else f"{group[0]} .. {group[-1]} ({len(group)} layers)"
            label = f"model {plan.model_id}, layers {shown}, reset {'/'.join(resets)}, trial {trial}"
            units = [(u.layer, u.reset.name, u.trial, u.metrics.state() if u.metrics.n else None) for u in members]
            tasks.append(_Task(index, label, [u.key for u in members], {**common, "units": units}))
    if not tasks and baseline:  # nothing left to measure, but the unmodified model's metrics are missing
        tasks.append(_Task(index, f"model {plan.model_id}, unmodified model only", [], {**common, "units": []}))
    return tasks


def _absolute(path: str) -> str:
    """A relative path as the driver sees it, made absolute (workers may run elsewhere)."""
    return os.path.abspath(path) if path and os.path.exists(path) else path


def _worker_spec(spec: str) -> str:
    kind, _, rest = spec.partition(":")
    return f"file:{_absolute(rest)}" if kind == "file" else spec


def _worker_reset(spec: str) -> str:
    """init:<ckpt> / interpolate:<alpha>:<ckpt> with the checkpoint path made absolute."""
    kind, _, arg = spec.partition(":")
    if kind == "init" and arg:
        return f"init:{_absolute(arg)}"
    if kind == "interpolate" and ":" in arg:
        alpha, _, path = arg.partition(":")
        return f"interpolate:{alpha}:{_absolute(path)}"
    return spec


def _connect(address: str | None) -> bool:
    """Join or start Ray; True if this call started it (and so must shut it down)."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    kwargs = {"logging_level": logging.WARNING, "log_to_driver": True}
    try:
        if address is None:
            ray.init(include_dashboard=False, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = "a local Ray instance" if address is None else f"the Ray cluster at {address}"
        raise LayercritError(f"could not start or join {where} ({type(e).__name__}: {str(e).splitlines()[0][:160]}): "
                             "start one with `ray start --head`, or check --ray-address") from None
    return True


def _task_threads(opts: dict, ray, local_threads: int) -> None:
    """Set ``opts["threads"]`` (torch threads in each task) and a default ``opts["cpus_per_task"]``.

    On the CPU, float32 results depend in their last bits on torch's thread count (locally too), so a
    CPU task uses this process's count: what ``backend="local"`` would use here, hence the same numbers.
    Its CPUs default to that count, capped at the largest node's (a task asking for more would never
    be scheduled). On GPUs the thread count does not change the numbers: threads = CPUs per task (default 1).
    """
    if opts["gpus_per_task"] > 0:
        opts["cpus_per_task"] = opts["cpus_per_task"] or 1.0
        opts["threads"] = max(1, int(opts["cpus_per_task"]))
        return
    opts["threads"] = local_threads
    if opts["cpus_per_task"] is None:
        largest = max((n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1)
        opts["cpus_per_task"] = float(max(1, min(local_threads, int(largest))))


def _stored_baseline(db, run_id: int, n_samples: int) -> dict | None:
    """The unmodified model's metrics as the database holds them for this run, if measured on these images."""
    from ..store.sqlite import BASELINE_METRICS

    runs = db.runs()
    row = runs[runs["run_id"] == run_id]
    if row.empty or row.iloc[0]["base_n_samples"] != n_samples or pd.isna(row.iloc[0]["base_top1_acc"]):
        return None
    return {m: float(row.iloc[0][f"base_{m}"]) for m in BASELINE_METRICS}


def _forwarded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIX)}


def _failure_text(task: _Task, error: Exception, max_retries: int) -> str:
    import ray

    if isinstance(error, ray.exceptions.RayTaskError):
        cause = getattr(error, "cause", None)
        if isinstance(cause, LayercritError):
            return f"{task.label}: {cause}"
        what = cause if cause is not None else error
        return f"{task.label}: {type(what).__name__}: {str(what).strip().splitlines()[-1][:300] if str(what) else ''}"
    first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return (f"{task.label}: its worker died on every attempt ({max_retries + 1} in all, --max-retries {max_retries}; "
            f"{type(error).__name__}: {first})")


def run_plans(plans: Iterable, db, *, progress: bool = True, **options) -> list[tuple[int | None, list[dict], dict]]:
    """Measure prepared plans (:func:`layercrit.engine.measure.prepare_measurement`) on Ray.

    ``plans`` may be a generator: each plan is opened in ``db`` and its tasks are submitted as it
    comes, so the cluster starts working while the driver prepares the next model. ``db`` (a
    :class:`ResultStore` or None) is written only here, in the driver: a task's rows are committed
    together as it returns, a model's baseline and end time when its last task has returned.
    Returns ``(run_id, rows measured now, baseline metrics)`` per plan, in order.
    """
    import torch

    from ..engine.measure import open_measurement

    opts = check_ray_options(options, "cuda" if (options.get("gpus_per_task") or 0) > 0 else "cpu")
    ray = _import_ray()
    started = _connect(opts["address"])
    _task_threads(opts, ray, torch.get_num_threads())
    remote = ray.remote(run_task)
    env = _forwarded_env()
    call_options = {"num_cpus": opts["cpus_per_task"], "num_gpus": opts["gpus_per_task"],
                    "max_retries": opts["max_retries"], "retry_exceptions": False}
    if env:
        call_options["runtime_env"] = {"env_vars": env}
    states: list[_PlanState] = []
    pending: dict = {}  # ObjectRef -> _Task
    failures: list[str] = []
    data_refs: dict[str, object] = {}
    bar = tqdm(total=0, desc="ray tasks", unit="task", disable=not progress, dynamic_ncols=True)

    def postfix() -> None:
        running = [s for s in states if s.done + s.failed < s.tasks]
        complete = len(states) - len(running)
        parts = [f"{s.plan.model_id} {s.done}/{s.tasks}" for s in running[:3]]
        if len(running) > 3:
            parts.append(f"+{len(running) - 3} more")
        if len(states) > 1:
            parts.insert(0, f"models {complete}/{len(states)} done")
        bar.set_postfix_str(", ".join(parts), refresh=False)

    def collect(ref) -> None:
        task = pending.pop(ref)
        state = states[task.plan]
        try:
            out = ray.get(ref)
        except ray.exceptions.RayError as e:
            state.failed += 1
            failures.append(_failure_text(task, e, opts["max_retries"]))
            if pending:
                log.warning(f"ray task failed: {failures[-1]}; the other tasks go on")
        else:
            rows = [r for r in out["rows"] if (r["layer"], r["reset"], r["trial"]) not in state.committed]
            got = sorted((r["layer"], r["reset"], r["trial"]) for r in out["rows"])
            if got != sorted(task.keys) or len(rows) != len(out["rows"]):
                raise LayercritError(f"ray task returned rows for other units than asked ({task.label}): "
                                     "this is a bug; rerun to resume")
            if db is not None and rows:
                db.save_progress(state.run_id, [], rows)
            state.committed.update((r["layer"], r["reset"], r["trial"]) for r in rows)
            state.rows.extend(rows)
            state.base = state.base or out["base"]
            state.done += 1
            if state.done == state.tasks and db is not None:
                db.set_baseline(state.run_id, state.base, state.plan.n_samples)
                db.finish_run(state.run_id)
        postfix()
        bar.update(1)

    def drain(block: bool) -> None:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=None if block else 0)
            if not ready:
                return
            collect(ready[0])

    try:
        for index, plan in enumerate(plans):
            run_id, todo = open_measurement(plan, db)
            state = _PlanState(plan, run_id)
            states.append(state)
            if plan.model_options is not None and plan.bundle.spec != "python":
                mopts = dict(plan.model_options)
                if mopts.get("checkpoint"):
                    mopts["checkpoint"] = ",".join(_absolute(p) for p in mopts["checkpoint"].split(","))
                model_spec = {"kind": "spec", "spec": _worker_spec(plan.bundle.spec), "options": mopts}
            else:
                model_spec = {"kind": "ref", "ref": [ray.put(plan.bundle)], "spec": plan.bundle.spec}
            model_spec["weights_sha256"] = plan.weights_sha256
            model_spec["key"] = repr((model_spec["kind"], model_spec["spec"], plan.weights_sha256,
                                      sorted((model_spec.get("options") or {}).items())))
            if opts["data_mode"] == "path" and plan.data_path is not None:
                data_spec = {"kind": "path", "path": os.path.abspath(plan.data_path), "options": plan.data_options}
            else:
                if opts["data_mode"] == "path":
                    log.warning(f"{plan.model_id}: in-memory data has no path: shipping it through the object store")
                if plan.data_fingerprint not in data_refs:
                    d = plan.data
                    data_refs[plan.data_fingerprint] = ray.put({
                        "images": d.images.contiguous().numpy(), "labels": d.labels.numpy(),
                        "classes": list(d.classes), "source": d.source})
                data_spec = {"kind": "ref", "ref": [data_refs[plan.data_fingerprint]]}
            data_spec["fingerprint"] = plan.data_fingerprint
            if not todo and db is not None:  # a finished model: nothing to submit, if its baseline is stored
                state.base = _stored_baseline(db, run_id, plan.n_samples)
            tasks = _make_tasks(index, plan, todo, opts, model_spec, data_spec, baseline=state.base is None)
            state.tasks = len(tasks)
            for task in tasks:
                pending[remote.options(**call_options).remote(task.payload)] = task
            plan.bundle, plan.data = None, None  # the workers have what they need; free the driver's copies
            bar.total += len(tasks)
            postfix()
            bar.refresh()
            drain(block=False)
        drain(block=True)
    finally:
        for ref in list(pending):  # interrupted: stop the rest (their workers live on); a rerun submits them again
            try:
                ray.cancel(ref)
            except Exception:  # already finished or gone
                pass
        bar.close()
        if started:
            ray.shutdown()
    if failures:
        more = f" (and {len(failures) - 1} more task(s))" if len(failures) > 1 else ""
        raise LayercritError(f"ray task failed for {failures[0]}{more}; the rows of every other task are saved: "
                             "fix the cause and rerun the same command to resume")
    return [(s.run_id, s.rows, s.base) for s in states]


def measure_models(models: Iterable, data, *, store=None, backend: str = "ray", ray: dict | None = None,
                   model_options: dict | None = None, progress: bool = True, **measure_kwargs) -> pd.DataFrame:
    """Measure several models into one study database, on Ray (one bar, one pool of tasks) or locally.

    ``models``: spec strings (rebuilt inside the workers with ``create_model(spec, **model_options)``),
    ``(spec, options)`` pairs (per-model ``create_model`` options such as ``name=`` or ``checkpoint=``),
    ``(spec, options, overrides)`` triples (plus per-model :func:`layercrit.measure` arguments, e.g.
    ``reset=``, ``category=``, ``model_id=``), or :class:`ModelBundle` objects (shipped once through the
    object store). ``data`` is a data folder or an :class:`EvalData`; ``measure_kwargs`` are
    :func:`layercrit.measure`'s for every model (layers, trials, samples, seed, batch_size, device,
    engine, precision, target_ci, ...). A study runner calls this; rerunning it resumes every model.
    With the ray backend, a model that cannot be prepared (a missing checkpoint, say) is skipped, the
    others are measured, and one error at the end names it.
    """
    from ..engine.measure import finish_measurement, measure, prepare_measurement
    from ..store import ResultStore

    def source(m) -> tuple:
        """(model, create_model options or None, measure() arguments)"""
        if isinstance(m, tuple):
            overrides = m[2] if len(m) > 2 else {}
            return m[0], {**(model_options or {}), **m[1]}, {**measure_kwargs, **overrides}
        if isinstance(m, str):
            return m, dict(model_options or {}), measure_kwargs
        return m, None, measure_kwargs

    if backend == "local":
        tables = [measure(spec, data, store=store, model_options=opts, progress=progress, **kw)
                  for spec, opts, kw in map(source, models)]
        return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if backend != "ray":
        raise LayercritError(f"unknown backend '{backend}': use local or ray")
    device = measure_kwargs.get("device", "cpu")
    opts = check_ray_options(ray or {}, device)
    plans = []

    failed: list[str] = []

    def prepared() -> Iterator:
        for m in models:
            spec, mopts, kw = source(m)
            try:
                plan = prepare_measurement(spec, data, model_options=mopts, check_device=False, progress=progress,
                                           **kw)
            except LayercritError as e:  # one bad model (a missing checkpoint, say) does not stop the others
                failed.append(f"{spec if isinstance(spec, str) else type(spec).__name__}: {e}")
                log.warning(f"skipping {failed[-1]}")
                continue
            plans.append(plan)
            yield plan

    own_store = isinstance(store, str) or hasattr(store, "__fspath__")
    db = ResultStore(store) if own_store else store
    try:
        results = run_plans(prepared(), db, progress=progress, **opts)
        tables = [finish_measurement(plan, db, run_id, rows, base) for plan, (run_id, rows, base)
                  in zip(plans, results)]
    finally:
        if own_store and db is not None:
            db.close()
    if failed:
        raise LayercritError(f"{len(failed)} model(s) could not be measured, the others are saved: {failed[0]}"
                             + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
