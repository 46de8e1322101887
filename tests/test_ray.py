"""The Ray backend (local Ray instance, 2 CPUs): same rows as the local backend, a killed worker is retried,
an interrupted driver resumes; every row exactly once."""
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from conftest import noise_image_folder, run_cli

import layercrit as lc
from layercrit.models import ModelOptions
from layercrit.scale.ray import RayExecutor, RayOptions, driver, run_task
from layercrit.store import METRICS

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'layercrit[ray]' (or '.[test]')")

LAYERS = ["conv1", "layer1.0.*", "fc"]  # 6 layers of cifar_resnet50
# batches of 8: here float32 convolutions give other last bits with 1 and 2 torch threads, so these tests
# also check that a task computes with the thread count a local run uses
UNITS = 6 * 2 + 6  # random x 2 trials + zero (deterministic: trial 0 only)


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def task_env(module_cache, monkeypatch):
    """The same environment for every test's tasks (the driver forwards its LAYERCRIT_* variables to them), so
    Ray reuses its worker processes across tests: one private cache for the module."""
    monkeypatch.setenv("LAYERCRIT_CACHE", str(module_cache))


def _killing_once(marker: str):
    """A task function for the driver: the first task attempt to start (the one that creates ``marker``) kills
    its own worker process, as a crash or OOM kill would; every other attempt runs the task."""
    def task(payload):
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return run_task(payload)
        os.write(fd, f"{socket.gethostname()} pid {os.getpid()}\n".encode())
        os.close(fd)
        os._exit(1)

    return task


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return noise_image_folder(tmp_path_factory.mktemp("tmp") / "data", per_class=4)


def _args(folder, db, *extra):
    return ["measure", "--model", "arch:cifar_resnet50", "--data", str(folder), "--samples", "32", "--layers", *LAYERS,
            "--reset", "random", "--reset", "zero", "--trials", "2", "--seed", "5", "--batch-size", "8",
            "--db", str(db), "--no-progress", *extra]


@pytest.fixture(scope="module")
def local_db(folder, module_cache, tmp_path_factory):
    """The local backend's results: the reference. (Module fixtures set up before the autouse env fixture.)"""
    db = tmp_path_factory.mktemp("local") / "local.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAYERCRIT_CACHE", str(module_cache))
        run_cli(*_args(folder, db), check=True)
    return db


def _rows(db) -> pd.DataFrame:
    with lc.ResultStore(db, create=False) as store:
        return store.results().set_index(["layer", "reset", "trial"]).sort_index()


def _key_counts(db) -> list[int]:
    con = sqlite3.connect(db)
    try:
        return [n for (n,) in con.execute("SELECT count(*) FROM results GROUP BY run_id, layer, reset, trial")]
    finally:
        con.close()


def _assert_same_numbers(db, reference_db):
    got, want = _rows(db), _rows(reference_db)
    assert list(got.index) == list(want.index) and len(got) == UNITS
    for m in [*METRICS, "n_samples", "layer_index", "base_top1_acc"]:
        np.testing.assert_allclose(got[m].to_numpy(float), want[m].to_numpy(float), rtol=0, atol=1e-9, err_msg=m)


def test_ray_export_identical_to_local(ray_cluster, folder, local_db, tmp_path):
    db = tmp_path / "ray.db"
    proc = run_cli(*_args(folder, db, "--backend", "ray", "--layers-per-task", "4"), check=True)
    assert f"{UNITS} rows in {db}" in proc.stdout
    assert _key_counts(db) == [1] * UNITS

    for layout, suffix in (("paper", ".csv"), ("tidy", ".csv")):
        a, b = tmp_path / f"local-{layout}{suffix}", tmp_path / f"ray-{layout}{suffix}"
        run_cli("export", "--db", str(local_db), "--out", str(a), "--layout", layout, check=True)
        run_cli("export", "--db", str(db), "--out", str(b), "--layout", layout, check=True)
        if layout == "paper":  # no timing column: byte-identical files
            assert a.read_bytes() == b.read_bytes()
            assert len(pd.read_csv(a)) == 6 * 2
        else:  # every column but the wall-clock elapsed_seconds of each row
            ta, tb = pd.read_csv(a).drop(columns="elapsed_seconds"), pd.read_csv(b).drop(columns="elapsed_seconds")
            pd.testing.assert_frame_equal(ta, tb, check_exact=True)
            assert len(ta) == UNITS and ta["criticality"].max() > 50  # resetting fc moves the predictions

    with lc.ResultStore(db, create=False) as store:  # the driver recorded the run like a local one
        run = store.runs().iloc[0]
    assert run.finished is not None and run.base_n_samples == 32


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean((2, 3)))


def test_python_api_module_shipped_once_adaptive_same_rows(ray_cluster):
    # _Net lives in this test module, which Ray workers cannot import: ship it by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    torch.manual_seed(1)
    net = _Net()
    g = torch.Generator().manual_seed(2)
    data = lc.EvalData.from_tensors(torch.randint(0, 256, (300, 3, 8, 8), dtype=torch.uint8, generator=g),
                                    torch.randint(0, 5, (300,), generator=g))
    kw = dict(factory=_Net, normalize=None, samples=None, trials=3, batch_size=50, target_ci=2.0, progress=False)
    local = lc.measure(net, data, **kw)
    remote = lc.measure(net, data, executor=RayExecutor(RayOptions(layers_per_task=1)), **kw)
    assert len(remote) == 3 * 3
    pd.testing.assert_frame_equal(local.drop(columns="elapsed_seconds"), remote.drop(columns="elapsed_seconds"), check_exact=True)
    assert remote.n_samples.min() < 300  # adaptive sampling stopped some units early, inside the tasks


def test_measure_models_one_study_two_models(ray_cluster, folder, tmp_path):
    # what a study runner calls: several models, one pool of tasks, one database; same rows as one by one locally
    models = ["arch:cifar_resnet50", lc.ModelSource("arch:cifar_resnet50",
                                                    ModelOptions(init_seed=1, name="other", category="b"))]
    kw = dict(layers=["layer4.2.*", "fc"], samples=32, trials=2, seed=5, batch_size=16, progress=False)
    remote = lc.measure_models(models, str(folder), store=tmp_path / "study.db",
                               executor=RayExecutor(RayOptions(layers_per_task=2)), **kw)
    local = lc.measure_models(models, str(folder), store=tmp_path / "local.db", **kw)
    assert sorted(remote.model_id.unique()) == ["cifar_resnet50", "other"] and len(remote) == 2 * 4 * 2
    pd.testing.assert_frame_equal(local.drop(columns="elapsed_seconds"), remote.drop(columns="elapsed_seconds"), check_exact=True)
    assert not np.allclose(*(remote[remote.model_id == m].criticality.to_numpy() for m in ["cifar_resnet50", "other"]))
    with lc.ResultStore(tmp_path / "study.db", create=False) as store:
        runs = store.runs()
    assert runs.finished.notna().all() and (runs.base_n_samples == 32).all() and runs.category.iloc[1] == "b"


def test_killed_worker_retried_or_named_after_max_retries_rows_exactly_once(ray_cluster, folder, local_db, tmp_path,
                                                                            monkeypatch):
    db, marker = tmp_path / "killed.db", tmp_path / "killed"
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the task function below lives in this module
    monkeypatch.setattr(driver, "run_task", _killing_once(str(marker)))
    # no retries allowed: the task whose worker is killed fails with one error naming its units
    proc = run_cli(*_args(folder, db, "--backend", "ray", "--layers-per-task", "3", "--max-retries", "0"))
    assert proc.returncode == 2, proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("layercrit: error:")]
    assert len(error) == 1 and "Traceback" not in proc.stderr
    assert "model cifar_resnet50, layers" in error[0] and ", trial " in error[0] and "worker died" in error[0]
    assert "--max-retries 0" in error[0] and "rerun" in error[0]
    assert "pid" in marker.read_text()
    saved = len(_key_counts(db))
    assert saved in (UNITS - 6, UNITS - 3)  # every other task's rows are committed (the failed one had 6 or 3)

    # rerun with retries (the default 3), the worker killed again during the first attempt: retried, completes
    marker.unlink()
    proc = run_cli(*_args(folder, db, "--backend", "ray", "--layers-per-task", "3", "--ray-data", "path"), check=True)
    assert "pid" in marker.read_text(), "no worker was killed: the test's task function did not run"
    assert f"{UNITS} rows in {db}" in proc.stdout
    assert _key_counts(db) == [1] * UNITS
    _assert_same_numbers(db, local_db)


def test_killed_driver_resumes_without_repeating(ray_cluster, folder, local_db, tmp_path, monkeypatch):
    # a real driver process joins the running cluster and is killed (SIGKILL: no cleanup) after its first commit
    db = tmp_path / "killed-driver.db"
    args = _args(folder, db, "--backend", "ray", "--layers-per-task", "1",
                 "--ray-address", ray.get_runtime_context().gcs_address)
    process = subprocess.Popen([sys.executable, "-m", "layercrit.cli", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600  # generous: a loaded 2-core machine starts a driver slowly; no timing test
    while not (db.exists() and _committed(db)):
        assert process.poll() is None, f"driver ended before it could be killed: {process.communicate()}"
        assert time.time() < deadline, "the driver committed nothing"
        time.sleep(0.02)
    process.kill()
    process.communicate(timeout=60)
    first = _rows(db)
    assert 1 <= len(first) < UNITS  # killed mid-way: some rows committed, others not

    made = []  # the tasks the rerun submits
    make = driver.make_tasks

    def spy(*a, **k):
        tasks = make(*a, **k)
        made.extend(tasks)
        return tasks

    monkeypatch.setattr(driver, "make_tasks", spy)
    run_cli(*args[:-2], check=True)  # rerun (in this process, on the same cluster)
    submitted = [k for t in made for k in t.keys]
    assert len(submitted) == len(set(submitted)) == UNITS - len(first)  # only units not committed before
    assert not set(submitted) & set(first.index)
    assert _key_counts(db) == [1] * UNITS
    _assert_same_numbers(db, local_db)
    for key, row in first.iterrows():  # rows committed before the kill are the ones kept
        assert _rows(db).loc[key, "elapsed_seconds"] == row["elapsed_seconds"]

    made.clear()  # a rerun of the finished measurement submits nothing and changes nothing
    before = _rows(db)
    proc = run_cli(*args[:-2], check=True)
    assert made == [] and f"{UNITS} rows in {db}" in proc.stdout
    pd.testing.assert_frame_equal(_rows(db), before)


def test_ctrl_c_stops_the_tasks_and_keeps_committed_rows(ray_cluster, folder, local_db, tmp_path, monkeypatch):
    from layercrit.store import ResultStore

    commit, commits = ResultStore.save_progress, []

    def interrupted(self, run_id, partial, finished):  # Ctrl-C arrives right after the driver's first commit
        commit(self, run_id, partial, finished)
        commits.append(len(finished))
        raise KeyboardInterrupt

    monkeypatch.setattr(ResultStore, "save_progress", interrupted)
    db = tmp_path / "interrupted.db"
    proc = run_cli(*_args(folder, db, "--backend", "ray", "--layers-per-task", "2"))
    assert proc.returncode == 130 and "rerun the same command to resume" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(commits) == 1 and _key_counts(db) == [1] * commits[0] and commits[0] in (2, 4)  # one task's rows
    # the rerun resumes on the same cluster (whose interrupted workers were ended, not left half-way through a
    # task) and ends with the local backend's numbers
    monkeypatch.setattr(ResultStore, "save_progress", commit)
    run_cli(*_args(folder, db, "--backend", "ray", "--layers-per-task", "2"), check=True)
    assert _key_counts(db) == [1] * UNITS
    _assert_same_numbers(db, local_db)


def _committed(db) -> int:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT count(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0
    finally:
        con.close()


def test_bad_ray_options_are_one_line_errors(folder, tmp_path):
    db = tmp_path / "x.db"
    for extra, words in ((["--gpus-per-task", "1"], "need(s) --backend ray"),
                         (["--backend", "ray", "--device", "cuda", "--gpus-per-task", "0"], "--gpus-per-task above 0"),
                         (["--backend", "ray", "--layers-per-task", "0"], "--layers-per-task")):
        proc = run_cli(*_args(folder, db, *extra))
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not db.exists()


def test_study_run_on_ray_matches_local(ray_cluster, folder, tmp_path):
    """`layercrit study run --backend ray` measures a study's spec models with the local backend's numbers."""
    study = tmp_path / "s.toml"
    study.write_text(f"""
[study]
name = "ray-study"
data = "{folder.parent}"
arch = "cifar_resnet50"
seed = 5
samples = 16
trials = 2
resets = ["random"]

[[models]]
id = "a"
category = "control"
spec = "arch:cifar_resnet50"

[[models]]
id = "b"
category = "control"
spec = "arch:cifar_resnet50_w32"
""")
    if not (folder.parent / "test").exists():
        (folder.parent / "test").symlink_to(folder, target_is_directory=True)
    tables = {}
    for backend in ("local", "ray"):
        db = tmp_path / f"{backend}.db"
        proc = run_cli("study", "run", str(study), "--db", str(db), "--no-progress", "--backend", backend)
        assert proc.returncode == 0, proc.stderr
        with lc.ResultStore(db) as store:
            tables[backend] = store.results().drop(columns=["elapsed_seconds", "run_id"]).sort_values(
                ["model_id", "layer", "reset", "trial"]).reset_index(drop=True)
    assert len(tables["local"]) == 2 * 54 * 2
    pd.testing.assert_frame_equal(tables["local"], tables["ray"])
