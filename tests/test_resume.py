"""An interrupted measurement resumes: every (layer, trial) exactly once, same numbers."""
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np

import layercrit as lc
from conftest import interruptible, noise_image_folder
from layercrit.store import METRICS


def _progress(db):
    """Images measured so far, over all units (finished rows and running sums)."""
    con = sqlite3.connect(db)
    try:
        done = con.execute("SELECT coalesce(sum(n_samples), 0) FROM results").fetchone()[0]
        running = con.execute("SELECT coalesce(sum(n_samples), 0) FROM partial").fetchone()[0]
        return done + running
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def _start(args):
    return subprocess.Popen([sys.executable, "-m", "layercrit.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=interruptible)


def _interrupt_after(proc, db, images, sig):
    deadline = time.time() + 600  # generous: a loaded 2-core machine is slow, and this is no timing test
    try:
        while _progress(db) < images:
            assert proc.poll() is None, f"run ended before it could be interrupted: {proc.communicate()}"
            assert time.time() < deadline, "measurement made no progress"
            time.sleep(0.05)
    except BaseException:
        proc.kill()  # never leave the measuring process behind a failed test
        proc.communicate()
        raise
    proc.send_signal(sig)
    return proc.communicate(timeout=60)


def test_interrupted_run_resumes_exactly(tmp_path):
    data = noise_image_folder(tmp_path / "data", per_class=16)
    db = tmp_path / "resumed.db"
    args = ["measure", "--model", "arch:cifar_resnet50", "--data", str(data), "--samples", "160", "--trials", "2",
            "--seed", "3", "--batch-size", "20", "--db", str(db), "--no-progress"]
    units = 54 * 2

    first = _start(args)  # progress is saved after every batch of 20 images, for all 108 units
    _, err = _interrupt_after(first, db, units * 20, signal.SIGINT)
    assert first.returncode == 130
    assert "rerun the same command to resume" in err and "Traceback" not in err
    second = _start(args)
    _interrupt_after(second, db, _progress(db) + units * 20, signal.SIGKILL)  # hard kill: no chance to clean up
    assert second.returncode == -signal.SIGKILL
    assert units * 40 <= _progress(db) < units * 160
    third = _start(args)
    out, err = third.communicate(timeout=600)
    assert third.returncode == 0, err

    con = sqlite3.connect(db)
    keys = con.execute("SELECT layer, reset, trial, count(*) FROM results GROUP BY layer, reset, trial").fetchall()
    assert len(keys) == 54 * 2 and all(k[3] == 1 for k in keys)
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    assert con.execute("SELECT finished FROM runs").fetchone()[0] is not None
    assert con.execute("SELECT count(*) FROM partial").fetchone()[0] == 0
    assert {n for (n,) in con.execute("SELECT DISTINCT n_samples FROM results")} == {160}

    # the same measurement uninterrupted, in this process: identical numbers
    bundle = lc.create_model("arch:cifar_resnet50")
    clean = lc.measure(bundle, str(data), samples=160, trials=2, seed=3, batch_size=20, progress=False)
    with lc.ResultStore(db) as store:
        resumed = store.results()
    merged = resumed.merge(clean, on=["layer", "reset", "trial"], suffixes=("", "_clean"))
    assert len(merged) == 108
    for m in METRICS:
        np.testing.assert_allclose(merged[m], merged[m + "_clean"], rtol=0, atol=1e-9, err_msg=m)
