"""Hostile input and failing disks (issue 14): the bad-input matrix, through the real CLI.

Every case runs the ``layercrit`` command in its own process with a timeout (a hang fails the
case) and asserts the exit status, exactly one ``layercrit: error:`` line and no traceback, that
nothing was written where the case must not write (a snapshot of its folder and of the shared
inputs before and after), and whatever the case is about.

Most cases run in a process forked from a server that has imported the CLI once
(``cli_forkserver.py``: the child runs ``layercrit.cli.main`` with its own argv, folder,
environment, stdout/stderr and exit status, exactly as ``python -m layercrit.cli``); a fresh
interpreter per case would cost 4-6 s of CPU each, minutes in all. The cases about the start
itself (Ctrl-C while importing, offline hub, user namespaces, two writers at once) start a fresh
``python -m layercrit.cli``. Full and read-only disks use a small tmpfs (root only);
permission-denied files are made for a uid the test process does not have inside a user
namespace (``unshare --user --map-root-user``) when running as root. Both skip with a reason
where that is impossible. Last: Hypothesis fuzzes the option and study-file validation
in-process (random values for every field: never a traceback).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import interruptible, run_cli

TIMEOUT = 240  # seconds per command: generous for a loaded 2-core machine; a hang ends the case as a failure
MODEL = ["--model", "arch:cifar_resnet50"]
MODEL_MEASURE = ["measure", *MODEL]
QUICK = ["--samples", "10", "--trials", "1", "--batch-size", "10", "--layers", "fc", "--no-progress"]
UNREADABLE_UID = 12345  # owner of the files made unreadable (a uid the test process never has)


# ---------------------------------------------------------------------------------------------------------------
# helpers

class ForkServer:
    """``cli_forkserver.py`` in a subprocess: runs CLI commands in forked children (see the module doc)."""

    def __init__(self, env: dict):
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("cli_forkserver.py"))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, bufsize=1)
        ready = self.proc.stdout.readline()
        assert ready.strip() == '{"ready": true}', f"the fork server did not start: {ready!r}"

    def run(self, args, cwd: Path, env: dict, timeout: float = TIMEOUT, userns: bool = False,
            ) -> subprocess.CompletedProcess:
        import tempfile

        argv = [str(a) for a in args]
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp, "out"), Path(tmp, "err")
            request = {"argv": argv, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err),
                       "timeout": timeout, "userns": userns}
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            reply = json.loads(self.proc.stdout.readline())
            if userns and reply["returncode"] == 97:
                pytest.skip("running as root without user namespaces: permission-denied files cannot be made")
            stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        if reply["timed_out"]:
            pytest.fail(f"layercrit {' '.join(argv)} did not finish within {timeout} s (a hang?): {stderr[-500:]!r}")
        return subprocess.CompletedProcess(["layercrit", *argv], reply["returncode"], stdout, stderr)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


_SERVERS: "queue.Queue[ForkServer]" = queue.Queue()


def layercrit(*args: str, cwd: Path, env: dict, timeout: float = TIMEOUT, unprivileged: bool = False,
              ) -> subprocess.CompletedProcess:
    """The CLI in a process forked from one of the module's servers (the next free one). With
    ``unprivileged`` (as root) the process runs where permission bits apply to files of other owners."""
    server = _SERVERS.get(timeout=TIMEOUT)
    try:
        return server.run(args, cwd, env, timeout, userns=unprivileged and os.geteuid() == 0)
    finally:
        _SERVERS.put(server)


def fresh(*args: str, cwd: Path, env: dict, prefix: tuple[str, ...] = (), timeout: float = TIMEOUT,
          ) -> subprocess.CompletedProcess:
    """The CLI as ``python -m layercrit.cli`` in a new interpreter; a hang past ``timeout`` fails the case."""
    cmd = [*prefix, sys.executable, "-m", "layercrit.cli", *map(str, args)]
    try:
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"layercrit {' '.join(map(str, args))} did not finish within {timeout} s (a hang?): "
                    f"{(e.stderr or b'')[-500:]!r}")


def assert_one_error(proc: subprocess.CompletedProcess, *needles: str, status: int = 2) -> str:
    """Exit ``status``, exactly one ``layercrit: error:`` line on stderr (warnings aside), no traceback."""
    err = proc.stderr
    assert "Traceback" not in err, err[-3000:]
    assert proc.returncode == status, f"exit {proc.returncode}, stderr:\n{err[-3000:]}"
    errors = [line for line in err.splitlines() if line.startswith("layercrit: error:")]
    others = [line for line in err.splitlines() if line.strip() and not line.startswith("layercrit: ")]
    assert len(errors) == 1, err[-3000:]
    assert not others, f"stray stderr lines: {others[:5]}"
    for n in needles:
        assert n.lower() in errors[0].lower(), errors[0]
    return errors[0]


def assert_clean_success(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stderr[-3000:]


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every file and folder below ``roots``: (kind, size, mtime) by path; symlinks are not followed."""
    seen = {}
    for root in roots:
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                kind = "l" if os.path.islink(p) else "d" if os.path.isdir(p) else "f"
                seen[p] = (kind, None if kind == "d" else st.st_size, None if kind == "d" else st.st_mtime_ns)
    return seen


def changes(before: dict, after: dict) -> list[str]:
    out = [f"new {p}" for p in after.keys() - before.keys()]
    out += [f"removed {p}" for p in before.keys() - after.keys()]
    out += [f"changed {p}" for p in before.keys() & after.keys() if before[p] != after[p]]
    return sorted(out)


def image_folder(root: Path, classes: int = 10, per_class: int = 2, size: int = 32) -> Path:
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (size, size), (i * 60, c * 20, 200 - c * 10)).save(root / f"c{c}" / f"{i}.png")
    return root


def unreadable(path: Path) -> None:
    """Make ``path`` unreadable for a process started with ``unprivileged=True``."""
    if os.geteuid() == 0:
        os.chown(path, UNREADABLE_UID, UNREADABLE_UID)
    os.chmod(path, 0)


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "2m"):
    """A small tmpfs at ``path`` (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("full-disk and read-only cases mount a tmpfs: run as root")
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount_ro(path: Path) -> None:
    r = subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only ({r.stderr.strip()})")


def fill(path: Path) -> None:
    """Fill the file system of ``path`` (a tmpfs) to the last byte."""
    fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 16, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------------------------
# the shared inputs: built once per module

@dataclass
class World:
    root: Path
    inputs: Path  # never written by any case
    data: Path  # 10 classes x 2 images, 32 px (cifar_resnet50's input)
    ckpt: Path  # cifar_resnet50 weights (.safetensors)
    db: Path  # a measured database (fc, random, 1 trial, 10 images)
    env: dict
    cache: Path

    def case_dir(self, name: str) -> Path:
        d = self.root / "cases" / name
        d.mkdir(parents=True)
        return d


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from layercrit.models import create_model, save_safetensors

    root = tmp_path_factory.mktemp("hostile")
    inputs = root / "in"
    data = image_folder(inputs / "data")
    bundle = create_model("arch:cifar_resnet50")
    ckpt = inputs / "good.safetensors"
    save_safetensors(bundle.network, ckpt)
    state = {k: v.clone() for k, v in bundle.network.state_dict().items()}

    state["conv1.weight"].view(-1)[0] = float("nan")
    torch.save(state, inputs / "nan.pt")
    state["conv1.weight"].view(-1)[0] = float("inf")
    torch.save({"state_dict": state}, inputs / "inf.pt")
    huge = {k: v.clone() for k, v in bundle.network.state_dict().items()}
    huge["fc.weight"].fill_(3e38)  # finite, but the logits overflow: a reset whose metrics are not finite
    torch.save(huge, inputs / "huge.pt")
    loop: dict = {}
    loop["state_dict"] = loop
    torch.save(loop, inputs / "cycle.pt")
    deep: dict = {"w": torch.zeros(1)}
    for _ in range(50):
        deep = {"state_dict": deep}
    torch.save(deep, inputs / "deep.pt")
    (inputs / "text.pt").write_text("this is a text file, not a checkpoint\n" * 20)
    (inputs / "study-data").mkdir()
    for split in ("train", "test"):  # a CIFAR-10-like root (train/ and test/) for train and compress-compare
        shutil.copytree(data, inputs / "cifar" / split)

    cache, mpl = root / "cache", root / "mpl"
    mpl.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "LAYERCRIT_CACHE": str(cache), "MPLCONFIGDIR": str(mpl),
           "COLUMNS": "200"}
    env.pop("CI", None)
    db = inputs / "measured.db"
    proc = fresh("measure", *MODEL, "--data", data, "--db", db, *QUICK, cwd=root, env=env)
    assert_clean_success(proc)
    started = [ForkServer(env) for _ in range(2)]  # two fork servers: two cases at a time
    for server in started:
        _SERVERS.put(server)
    yield World(root, inputs, data, ckpt, db, env, cache)
    for server in started:
        server.close()
    while not _SERVERS.empty():
        _SERVERS.get_nowait()


# ---------------------------------------------------------------------------------------------------------------
# the matrix of plain-file cases (run two at a time)

@dataclass
class Case:
    name: str
    defect: int  # the numbered defect it covers
    args: Callable[[World, Path], list]  # the command line, given the world and the case's own folder
    needles: tuple[str, ...] = ()  # words the error line must hold (case-insensitive)
    status: int = 2
    setup: Callable[[World, Path], None] | None = None
    check: Callable[[World, Path, subprocess.CompletedProcess], None] | None = None
    writes: bool = False  # the case may write into its own folder (a success case)


def _measure(w: World, d: Path, *extra, db: str = "s.db") -> list:
    return ["measure", *MODEL, "--data", w.data, "--db", d / db, *QUICK, *extra]


def _file_model(path_name: str, *extra) -> Callable[[World, Path], list]:
    return lambda w, d: ["measure", "--model", f"file:{w.inputs / path_name}", "--arch", "cifar_resnet50",
                         "--data", w.data, "--db", d / "s.db", *QUICK, *extra]


def _copy_db(w: World, d: Path, name: str = "copy.db") -> Path:
    shutil.copy(w.db, d / name)
    return d / name


def _truncated_db(w: World, d: Path) -> None:
    data = w.db.read_bytes()
    (d / "t.db").write_bytes(data[: len(data) * 2 // 3])


def _flipped_header_db(w: World, d: Path) -> None:
    data = bytearray(w.db.read_bytes())
    data[:16] = b"not sqlite at al"
    (d / "f.db").write_bytes(bytes(data))


def _partial_row(state: str, n: int) -> Callable[[World, Path], None]:
    """A copy of the measured db whose fc row is replaced by saved progress ``state`` (n images)."""
    def setup(w: World, d: Path) -> None:
        db = _copy_db(w, d, "s.db")
        with sqlite3.connect(db) as c:
            c.execute("DELETE FROM results")
            c.execute("UPDATE runs SET finished = NULL")
            c.execute("INSERT INTO partial (run_id, layer, reset, trial, n_samples, state) "
                      "VALUES (1, 'fc', 'random', 0, ?, ?)", (n, state))
        c.close()
    return setup


def _study(text: str) -> Callable[[World, Path], None]:
    def setup(w: World, d: Path) -> None:
        (d / "study.toml").write_text(text.replace("DATA", str(w.inputs / "study-data")))
    return setup


def _study_run(w: World, d: Path) -> list:
    return ["study", "run", d / "study.toml", "--db", d / "s.db", "--no-progress"]


STUDY_HEAD = '[study]\ndata = "DATA"\nsamples = 10\ntrials = 1\n'


def _symlink_loop(w: World, d: Path) -> None:
    shutil.copytree(w.data, d / "data", symlinks=True)
    os.symlink("..", d / "data" / "c0" / "loop")
    os.symlink("../c0", d / "data" / "c1" / "again")


def _no_db_check(w: World, d: Path, proc) -> None:
    assert not (d / "s.db").exists(), "a failed run must not create the database"


def _victim(w: World, d: Path) -> None:
    (d / "w" / "cc").mkdir(parents=True)
    victim = d / "victim-criticality-s0-n1"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")


def _victim_intact(w: World, d: Path, proc) -> None:
    assert (d / "victim-criticality-s0-n1" / "keep.txt").read_text() == "precious"
    assert not (d / "w" / "cc" / "out").exists()


def _float_tiff(w: World, d: Path) -> None:
    shutil.copytree(w.data, d / "data")
    Image.fromarray(np.full((32, 32), 7.5, dtype=np.float32)).save(d / "data" / "c3" / "bad.tiff")


def _dup_check(w: World, d: Path, proc) -> None:
    with sqlite3.connect(d / "s.db") as c:
        rows = c.execute("SELECT reset, COUNT(*) FROM results GROUP BY reset").fetchall()
    assert dict(rows) == {"zero": 1, "interpolate:0.5": 1}, rows


def _nonfinite_check(w: World, d: Path, proc) -> None:
    assert "non-finite" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    with sqlite3.connect(d / "s.db") as c:
        rows = c.execute("SELECT criticality, nonfinite FROM results").fetchall()
    assert rows and all(flag for _, flag in rows), rows


def _empty_file(w: World, d: Path) -> None:
    (d / "empty.db").write_bytes(b"")


def _lease_held(w: World, d: Path) -> None:
    """A copy of the measured db whose model is being measured by a live process (this test's)."""
    import socket

    db = _copy_db(w, d, "s.db")
    with sqlite3.connect(db) as c:
        c.execute("DELETE FROM results")
        c.execute("UPDATE runs SET finished = NULL")
        c.execute("CREATE TABLE IF NOT EXISTS writers (model_id TEXT PRIMARY KEY, token TEXT NOT NULL, host TEXT "
                  "NOT NULL, pid INTEGER NOT NULL, since TEXT NOT NULL, heartbeat REAL NOT NULL)")
        c.execute("INSERT OR REPLACE INTO writers VALUES ('cifar_resnet50', 'other', ?, ?, 'now', ?)",
                  (socket.gethostname(), os.getpid(), time.time()))
    c.close()


def _lease_stale(w: World, d: Path) -> None:
    _lease_held(w, d)
    dead = subprocess.Popen(["true"])
    dead.wait()
    with sqlite3.connect(d / "s.db") as c:
        c.execute("UPDATE writers SET pid = ?", (dead.pid,))
    c.close()


def _rows_complete(w: World, d: Path, proc) -> None:
    with sqlite3.connect(d / "s.db") as c:
        assert c.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1


CASES = [
    # 1 hostile checkpoints: bounded, never a hang
    Case("checkpoint-cycle", 1, _file_model("cycle.pt"), ("contains itself",), check=_no_db_check),
    Case("checkpoint-deep", 1, _file_model("deep.pt"), ("levels deep",), check=_no_db_check),
    Case("checkpoint-text-trust-pickle", 8, _file_model("text.pt", "--trust-pickle"), ("not a readable",),
         check=_no_db_check),
    # 2 names that would leave the output folder
    Case("compress-compare-id-escapes", 2,
         lambda w, d: ["compress-compare", "--model", f"../../victim=file:{w.ckpt}", "--data", w.inputs / "cifar",
                       "--out", d / "w" / "cc" / "out", "--remove", "1", "--random-seeds", "1", "--no-progress"],
         ("cannot be used as a file name",), setup=_victim, check=_victim_intact),
    Case("study-id-escapes", 2, lambda w, d: ["study", "show", d / "study.toml"], ("path separator",),
         setup=_study(STUDY_HEAD + '[[models]]\nid = "../../x"\nspec = "arch:cifar_resnet50"\n')),
    Case("study-id-nul", 8, lambda w, d: ["study", "show", d / "study.toml"], ("NUL",),
         setup=_study(STUDY_HEAD + '[[models]]\nid = "a\\u0000b"\nspec = "arch:cifar_resnet50"\n')),
    # 3 NaN is never success
    Case("checkpoint-nan", 3, _file_model("nan.pt"), ("non-finite", "conv1.weight"), check=_no_db_check),
    Case("checkpoint-inf-nested", 3, _file_model("inf.pt"), ("non-finite",), check=_no_db_check),
    Case("std-zero", 3, lambda w, d: _measure(w, d, "--mean", "0,0,0", "--std", "0,0,0"), ("--std",),
         check=_no_db_check),
    Case("reset-init-nan", 3, lambda w, d: _measure(w, d, "--reset", f"init:{w.inputs / 'nan.pt'}"),
         ("non-finite",), check=_no_db_check),
    Case("reset-nonfinite-recorded", 3, lambda w, d: _measure(w, d, "--reset", f"init:{w.inputs / 'huge.pt'}"),
         status=0, check=_nonfinite_check, writes=True),
    # 4 symlink loops never multiply the data: 20 images, so 21 is one too many
    Case("data-symlink-loop", 4,
         lambda w, d: ["measure", *MODEL, "--data", d / "data", "--db", d / "s.db", *QUICK, "--samples", "21"],
         ("more than the 20 images",), setup=_symlink_loop, check=_no_db_check),
    # 5 duplicate resets and a second writer
    Case("reset-duplicates", 5,
         lambda w, d: _measure(w, d, "--reset", "zero", "--reset", "zero", "--reset", "interpolate:0.5",
                               "--reset", "interpolate:0.50"), status=0, check=_dup_check, writes=True),
    Case("second-writer-live", 5, lambda w, d: _measure(w, d), ("being measured", "another process"),
         setup=_lease_held),
    Case("second-writer-dead", 5, lambda w, d: _measure(w, d), status=0, setup=_lease_stale,
         check=_rows_complete, writes=True),
    # 6 unwritable outputs (the disk cases are below, on a tmpfs)
    Case("export-onto-folder", 6, lambda w, d: ["export", "--db", w.db, "--out", d / "isdir.csv"], ("is a folder",),
         setup=lambda w, d: (d / "isdir.csv").mkdir()),
    Case("train-out-is-file", 6,
         lambda w, d: ["train", "--method", "standard", "--data", w.inputs / "cifar", "--out", d / "f", "--epochs", "1"],
         ("f",), setup=lambda w, d: (d / "f").write_text("x")),
    # 7 damaged databases
    Case("db-truncated", 7, lambda w, d: ["export", "--db", d / "t.db", "--out", d / "x.csv"], ("t.db",),
         setup=_truncated_db),
    Case("db-not-sqlite", 7, lambda w, d: ["export", "--db", d / "f.db", "--out", d / "x.csv"], ("f.db",),
         setup=_flipped_header_db),
    Case("db-partial-broken-json", 7, lambda w, d: _measure(w, d), ("s.db", "damaged", "saved progress"),
         setup=_partial_row("{not json", 5)),
    Case("db-partial-wrong-count", 7, lambda w, d: _measure(w, d), ("s.db", "damaged", "image count"),
         setup=_partial_row(json.dumps({"n": 50, **dict.fromkeys(
             ["top1_acc", "top5_acc", "loss", "pred_cos_sim", "pred_cos_sim_sq", "pred_l1_err", "pred_l2_err",
              "pred_ce_loss", "pred_kl_div", "pred_agreement"], 0.0)}), 50)),
    # 8 validation gaps: the same rules everywhere
    Case("seed-too-big", 8, lambda w, d: _measure(w, d, "--seed", str(2**70)), ("seed",), check=_no_db_check),
    Case("num-classes-zero", 8, lambda w, d: _measure(w, d, "--num-classes", "0"), ("num-classes",),
         check=_no_db_check),
    Case("num-classes-negative", 8, lambda w, d: _measure(w, d, "--num-classes", "-5"), ("num-classes",),
         check=_no_db_check),
    Case("input-size-zero", 8, lambda w, d: _measure(w, d, "--input-size", "0"), ("input-size",),
         check=_no_db_check),
    Case("input-size-huge", 8, lambda w, d: _measure(w, d, "--input-size", "100000"), ("input-size",),
         check=_no_db_check),
    Case("mean-std-length", 8, lambda w, d: _measure(w, d, "--mean", "1,2", "--std", "1,2"), ("--mean", "3"),
         check=_no_db_check),
    Case("threads-negative", 8,
         lambda w, d: ["train", "--method", "standard", "--data", w.inputs / "cifar", "--out", d / "run", "--threads", "-2"],
         ("threads",)),
    Case("train-eval-samples-beyond-data", 8,
         lambda w, d: ["train", "--method", "standard", "--data", w.inputs / "cifar", "--out", d / "run", "--epochs", "1",
                       "--eval-samples", "100000", "--no-progress"], ("--eval-samples", "100000")),
    Case("train-loss-diverges", 3,
         lambda w, d: ["train", "--method", "standard", "--data", w.inputs / "cifar", "--out", d / "run", "--epochs", "1",
                       "--lr", "1e30", "--batch-size", "4", "--warmup-epochs", "0", "--no-progress"],
         ("training loss became",), writes=True),
    Case("train-lr-nan", 3,
         lambda w, d: ["train", "--method", "standard", "--data", w.inputs / "cifar", "--out", d / "run", "--lr", "nan"],
         ("lr",)),
    Case("study-num-classes-text", 8, lambda w, d: ["study", "show", d / "study.toml"], ("num_classes",),
         setup=_study(STUDY_HEAD + '[[models]]\nid = "m"\nspec = "arch:cifar_resnet50"\nnum_classes = "ten"\n')),
    Case("study-resets-number", 8, _study_run, ("resets",), setup=_study(STUDY_HEAD.replace(
        "trials = 1\n", "trials = 1\nresets = 5\n") + '[[models]]\nid = "m"\nspec = "arch:cifar_resnet50"\n'),
        check=_no_db_check),
    Case("study-category-number", 8, _study_run, ("category",),
         setup=_study(STUDY_HEAD + '[[models]]\nid = "m"\nspec = "arch:cifar_resnet50"\ncategory = 7\n'),
         check=_no_db_check),
    # 9 writes nothing
    Case("study-samples-negative", 9, _study_run, ("samples",),
         setup=_study(STUDY_HEAD.replace("samples = 10", "samples = -1") + '[[models]]\nid = "m"\nspec = "arch:x"\n'),
         check=_no_db_check),
    Case("study-trials-zero", 9, _study_run, ("trials",),
         setup=_study(STUDY_HEAD.replace("trials = 1", "trials = 0") + '[[models]]\nid = "m"\nspec = "arch:x"\n'),
         check=_no_db_check),
    Case("study-batch-size-zero", 9, _study_run, ("batch_size",),
         setup=_study(STUDY_HEAD + 'batch_size = 0\n[[models]]\nid = "m"\nspec = "arch:x"\n'), check=_no_db_check),
    Case("study-bad-reset", 9, _study_run, ("reset",),
         setup=_study(STUDY_HEAD + 'resets = ["shuffle"]\n[[models]]\nid = "m"\nspec = "arch:x"\n'),
         check=_no_db_check),
    Case("study-spec-not-a-checkpoint", 9, _study_run, ("/etc/passwd",),
         setup=_study(STUDY_HEAD + '[[models]]\nid = "m"\nspec = "file:/etc/passwd"\narch = "cifar_resnet50"\n'),
         check=_no_db_check),
    Case("export-reads-only", 9, lambda w, d: ["export", "--db", d / "empty.db", "--out", d / "x.csv"],
         ("no results",), setup=_empty_file),
    # 10 messages that name the real problem
    Case("types-comma", 10, lambda w, d: _measure(w, d, "--types", ","), ("--types",), check=_no_db_check),
    Case("input-size-negative", 10, lambda w, d: _measure(w, d, "--input-size", "-5"), ("--input-size",),
         check=_no_db_check),
    # 11 images
    Case("float-tiff-out-of-range", 11,
         lambda w, d: ["measure", *MODEL, "--data", d / "data", "--db", d / "s.db", *QUICK, "--samples", "all"],
         ("bad.tiff", "float"), setup=_float_tiff, check=_no_db_check),
]


@pytest.fixture(scope="module")
def matrix(world):
    """Run every plain-file case (two at a time); returns name -> (proc, changes, case folder)."""
    def run(case: Case):
        d = world.case_dir(case.name)
        if case.setup:
            case.setup(world, d)
        before = snapshot(world.inputs, d)
        proc = layercrit(*case.args(world, d), cwd=d, env=world.env)
        after = snapshot(world.inputs, d)
        return case.name, (proc, changes(before, after), d)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, CASES))


@pytest.mark.parametrize("case", CASES, ids=[f"{c.defect}-{c.name}" for c in CASES])
def test_matrix(case: Case, world, matrix):
    proc, changed, d = matrix[case.name]
    if case.status == 0:
        assert_clean_success(proc)
    else:
        assert_one_error(proc, *case.needles, status=case.status)
    if not case.writes:
        assert not changed, f"a failed command wrote or deleted files: {changed}"
    else:
        outside = [c for c in changed if not c.split(" ", 1)[1].startswith(str(d))]
        assert not outside, f"written outside the case's folder: {outside}"
    if case.check:
        case.check(world, d, proc)


# ---------------------------------------------------------------------------------------------------------------
# disks that are full or read-only (tmpfs), files that are unreadable (user namespace)

def test_measure_db_on_read_only_mount(world, tmp_path):
    with tmpfs(tmp_path / "ro") as ro:
        remount_ro(ro)
        proc = layercrit(*_measure(world, ro), cwd=tmp_path, env=world.env)
        assert_one_error(proc, str(ro / "s.db"), "read-only")
        assert not (ro / "s.db").exists()


def test_measure_db_on_full_disk_keeps_database_readable(world, tmp_path):
    with tmpfs(tmp_path / "full", "1m") as full:
        shutil.copy(world.db, full / "s.db")
        with sqlite3.connect(full / "s.db") as c:  # the model's rows gone: the run must write again
            c.execute("DELETE FROM results")
        c.close()
        fill(full)
        proc = layercrit(*_measure(world, full), cwd=tmp_path, env=world.env)
        assert_one_error(proc, "s.db", "no space left")
        (full / "filler").unlink()
        proc = layercrit("export", "--db", full / "s.db", "--out", tmp_path / "rows.csv", cwd=tmp_path, env=world.env)
        assert_one_error(proc, "no results")  # still a readable database, just without rows


def test_export_to_read_only_and_full_places(world, tmp_path):
    with tmpfs(tmp_path / "ro") as ro:
        remount_ro(ro)
        proc = layercrit("export", "--db", world.db, "--out", ro / "x.csv", cwd=tmp_path, env=world.env)
        assert_one_error(proc, str(ro / "x.csv"), "read-only")
    with tmpfs(tmp_path / "full", "64k") as full:
        fill(full)
        proc = layercrit("export", "--db", world.db, "--out", full / "x.csv", cwd=tmp_path, env=world.env)
        assert_one_error(proc, str(full / "x.csv"), "no space left")
        assert sorted(p.name for p in full.iterdir()) == ["filler"], "a temporary file was left behind"


def test_report_to_read_only_and_full_places(world, tmp_path):
    with tmpfs(tmp_path / "ro") as ro:
        remount_ro(ro)
        proc = layercrit("report", "--db", world.db, "--out", ro / "report", cwd=tmp_path, env=world.env)
        assert_one_error(proc, "read-only")
    with tmpfs(tmp_path / "full", "256k") as full:
        fill(full)
        proc = layercrit("report", "--db", world.db, "--out", full / "report", cwd=tmp_path, env=world.env)
        assert_one_error(proc, "no space left")
        assert sorted(p.name for p in full.iterdir()) == ["filler"], "a temporary folder was left behind"


def test_unreadable_inputs(world, tmp_path):
    ckpt = tmp_path / "secret.safetensors"
    shutil.copy(world.ckpt, ckpt)
    unreadable(ckpt)
    proc = layercrit("measure", "--model", f"file:{ckpt}", "--arch", "cifar_resnet50", "--data", world.data, "--db",
                     tmp_path / "s.db", *QUICK, cwd=tmp_path, env=world.env, unprivileged=True)
    assert_one_error(proc, "permission denied", str(ckpt))  # not "No such file or directory"
    data = tmp_path / "data"
    shutil.copytree(world.data, data)
    unreadable(data)
    proc = layercrit(*MODEL_MEASURE, "--data", data, "--db", tmp_path / "s.db", *QUICK, cwd=tmp_path, env=world.env,
                     unprivileged=True)
    assert_one_error(proc, "permission denied", str(data))
    db = tmp_path / "ro.db"
    shutil.copy(world.db, db)
    with sqlite3.connect(db) as c:
        c.execute("DELETE FROM results")
    c.close()
    if os.geteuid() == 0:
        os.chown(db, UNREADABLE_UID, UNREADABLE_UID)
    os.chmod(db, 0o444)
    proc = layercrit(*_measure(world, tmp_path, db="ro.db"), cwd=tmp_path, env=world.env, unprivileged=True)
    assert_one_error(proc, "ro.db", "read-only")
    folder = tmp_path / "ro-folder"  # a database in a folder that cannot be written (no journal there)
    folder.mkdir()
    if os.geteuid() == 0:
        os.chown(folder, UNREADABLE_UID, UNREADABLE_UID)
    os.chmod(folder, 0o555)
    proc = layercrit(*_measure(world, folder), cwd=tmp_path, env=world.env, unprivileged=True)
    assert_one_error(proc, "s.db", "not writable")
    assert not (tmp_path / "s.db").exists() and not (folder / "s.db").exists()


# ---------------------------------------------------------------------------------------------------------------
# concurrency, interrupts, offline, non-finite reporting

def test_two_writers_of_one_model_at_once(world, tmp_path):
    """Both at once: each ends cleanly (the second stops at once with one line, or finds the first's rows
    committed), and the database holds every row exactly once."""
    args = ["measure", *MODEL, "--data", world.data, "--db", tmp_path / "s.db", "--samples", "20", "--trials", "2",
            "--batch-size", "5", "--layers", "fc", "layer4.2.conv3", "--no-progress"]
    with ThreadPoolExecutor(max_workers=2) as pool:  # two processes at the same time (one per fork server)
        procs = list(pool.map(lambda _: layercrit(*args, cwd=tmp_path, env=world.env), range(2)))
    for proc in procs:
        if proc.returncode != 0:
            assert_one_error(proc, "being measured")
        else:
            assert_clean_success(proc)
    assert 0 in [p.returncode for p in procs]
    proc = layercrit(*args, cwd=tmp_path, env=world.env)  # a rerun completes whatever the second left
    assert_clean_success(proc)
    with sqlite3.connect(tmp_path / "s.db") as c:
        assert c.execute("SELECT COUNT(*), COUNT(DISTINCT layer || reset || trial) FROM results").fetchone() == (4, 4)


def _mapped(pid: int, needle: str) -> bool:
    with contextlib.suppress(OSError):
        return needle in Path(f"/proc/{pid}/maps").read_text()
    return False


def test_ctrl_c_while_importing_prints_one_line(world, tmp_path):
    """SIGINT while PyTorch is being imported (the CLI's first second): one line, status 130."""
    if not Path("/proc/self/maps").exists():
        pytest.skip("needs /proc to see when the process is importing PyTorch")
    p = subprocess.Popen([sys.executable, "-m", "layercrit.cli", *_measure(world, tmp_path)], cwd=tmp_path,
                         env=world.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=interruptible)
    deadline = time.monotonic() + TIMEOUT
    while p.poll() is None and not _mapped(p.pid, "libtorch") and time.monotonic() < deadline:
        time.sleep(0.005)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=TIMEOUT)
    assert "Traceback" not in err, err
    assert p.returncode == 130, err
    assert err.strip().splitlines() == [err.strip()] and err.startswith("layercrit: interrupted"), err
    assert not (tmp_path / "s.db").exists()


def test_offline_timm_fails_fast_with_one_line(world, tmp_path):
    from layercrit.hub import hub_host, reachable

    if reachable(*hub_host()):
        pytest.skip("the Hugging Face hub is reachable here: the offline case needs no network")
    proc = fresh("layers", "--model", "timm:resnet18", cwd=tmp_path, env={**world.env, "HF_HOME": str(tmp_path)})
    assert_one_error(proc, "timm:resnet18", "cannot be reached")
    assert "Retrying" not in proc.stderr + proc.stdout


def test_nonfinite_reset_flagged_in_report(world, tmp_path):
    proc = layercrit(*_measure(world, tmp_path, "--reset", f"init:{world.inputs / 'huge.pt'}", "--name",
                               "$\\undefinedcmd{x}$"), cwd=tmp_path, env=world.env)
    assert_clean_success(proc)
    assert "non-finite" in proc.stdout + proc.stderr
    proc = layercrit("report", "--db", tmp_path / "s.db", "--reset", f"init:{world.inputs / 'huge.pt'}", "--out",
                     tmp_path / "report", cwd=tmp_path, env=world.env)
    assert_clean_success(proc)
    assert "non-finite" in proc.stderr, proc.stderr
    assert "undefinedcmd" in (tmp_path / "report" / "index.html").read_text()


# ---------------------------------------------------------------------------------------------------------------
# in-process: decoding, bounded flattening, names

def test_high_bit_depth_images_are_scaled_not_clipped(tmp_path):
    from layercrit.data.datasets import _open_rgb

    ramp = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0 .. 65472
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    rgb = np.asarray(_open_rgb(str(tmp_path / "g16.png")))
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb[..., 0].astype(int) - np.rint(ramp / 257)).max() <= 1
    assert (rgb == 255).mean() < 0.01  # not saturated
    Image.fromarray(np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)).save(tmp_path / "f.tiff")
    rgb = np.asarray(_open_rgb(str(tmp_path / "f.tiff")))
    assert rgb.min() == 0 and rgb.max() == 255 and rgb.mean() > 100  # not black


def test_checkpoint_flattening_is_bounded(tmp_path):
    from layercrit.errors import LayercritError
    from layercrit.models.checkpoint import _flatten

    a: dict = {}
    b: dict = {"model": a}
    a["state_dict"] = b  # a two-step cycle
    with pytest.raises(LayercritError, match="contains itself"):
        _flatten(a, tmp_path / "x.pt")


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "a\\b", "a\x00b", ".hidden", "x\n"])
def test_unsafe_names_are_refused(name, tmp_path):
    from layercrit.errors import LayercritError
    from layercrit.paths import path_inside

    with pytest.raises(LayercritError):
        path_inside(tmp_path, name)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    from layercrit.errors import LayercritError
    from layercrit.paths import atomic_write

    with pytest.raises(LayercritError, match="No space left on device"):
        with atomic_write(tmp_path / "x.csv") as tmp:
            tmp.write_text("half")
            raise OSError(28, os.strerror(28))
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------
# Hypothesis: random values for every option and study field never end in a traceback

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

NUMBERS = st.one_of(st.integers(min_value=-2**80, max_value=2**80), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, 1, -1, 2**63, 2**64, 10**6]))
TEXTS = st.one_of(st.text(max_size=12), st.sampled_from(["", ",", "1,2", "0,0,0", "nan,1,1", "all", "a\x00b",
                                                          "interpolate:0.50", "init:", "zero", "../x"]))
VALUES = st.one_of(NUMBERS.map(str), TEXTS)
OPTIONS = ["--seed", "--trials", "--samples", "--batch-size", "--input-size", "--num-classes", "--init-seed",
           "--mean", "--std", "--types", "--reset", "--target-ci", "--engine", "--precision", "--unit", "--name",
           "--category", "--layers"]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.sampled_from(OPTIONS), VALUES, max_size=4))
def test_fuzz_measure_options_never_traceback(tmp_path_factory, options):
    d = tmp_path_factory.mktemp("fuzz")
    argv = ["measure", "--model", "arch:cifar_resnet50", "--data", str(d / "no-data"), "--db", str(d / "s.db"),
            "--no-progress"]
    for k, v in options.items():
        if v.startswith("-"):
            argv.append(f"{k}={v}")
        else:
            argv += [k, v]
    proc = run_cli(*argv)  # an exception escaping main() fails the test with its traceback
    assert proc.returncode == 2, (argv, proc.stderr)
    if "usage:" not in proc.stderr:  # argparse's own refusal of a non-number is fine too
        assert_one_error(proc)
    assert not (d / "s.db").exists()


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(value)


TOML_VALUES = st.recursive(st.one_of(st.booleans(), st.integers(min_value=-2**63, max_value=2**63 - 1),
                                     st.floats(), TEXTS), lambda inner: st.lists(inner, max_size=3), max_leaves=4)
STUDY_FIELDS = ["name", "data", "arch", "seed", "samples", "trials", "resets", "batch_size", "device", "engine",
                "eval_data", "runs", "description"]
MODEL_FIELDS = ["id", "name", "category", "spec", "method", "arch", "checkpoint", "num_classes", "init_seed", "epochs",
                "lr", "eps"]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.sampled_from(STUDY_FIELDS), TOML_VALUES, max_size=4),
       st.dictionaries(st.sampled_from(MODEL_FIELDS), TOML_VALUES, max_size=4))
def test_fuzz_study_fields_never_traceback(tmp_path_factory, study, model):
    d = tmp_path_factory.mktemp("fuzz-study")
    study = {"data": str(d), **study}
    model = {"id": "m", "spec": "arch:cifar_resnet50", **model}
    text = "[study]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in study.items())
    text += "[[models]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in model.items())
    (d / "s.toml").write_text(text)
    proc = run_cli("study", "show", str(d / "s.toml"))
    assert proc.returncode in (0, 2), proc.stderr
    if proc.returncode == 2:
        assert_one_error(proc)


CONFIG_FIELDS = ["seed", "trials", "samples", "batch_size", "target_ci", "input_size", "types", "reset", "engine",
                 "precision", "unit", "layers", "split"]


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.sampled_from(CONFIG_FIELDS), st.one_of(NUMBERS, TEXTS, st.none(), st.booleans(),
                                                                 st.lists(st.one_of(NUMBERS, TEXTS), max_size=3)),
                       max_size=4))
def test_fuzz_python_config_never_raises_anything_else(values):
    """Python gets the command line's rules: a bad value is one LayercritError, never another exception."""
    from layercrit.engine import MeasureConfig
    from layercrit.errors import LayercritError
    from layercrit.validate import model_options

    with contextlib.suppress(LayercritError):
        MeasureConfig(**values)
    with contextlib.suppress(LayercritError):
        model_options(num_classes_=values.get("trials"), init_seed=values.get("seed", 0), mean=values.get("types"),
                      std=values.get("reset"))


RULE_FIELDS = ["reference", "z", "floor", "null_effect", "max_gap", "measures", "extra"]
CLAIM_FIELDS = ["id", "text", "variants", "quantity", "minus", "direction", "against", "floor", "extra"]


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.sampled_from(RULE_FIELDS), TOML_VALUES, max_size=3),
       st.dictionaries(st.sampled_from(CLAIM_FIELDS), TOML_VALUES, max_size=4))
def test_fuzz_claims_are_judged_or_refused_in_one_error(rules, claim):
    """A claims file (report --claims) with random values: parsed and judged against a small lab table, or one
    LayercritError; never another exception."""
    import pandas as pd

    from layercrit.analysis import claims_from_dict, judge_claims
    from layercrit.errors import LayercritError

    claim = {"id": "c", "text": "t", "variants": ["adv"], "quantity": ["avg"], **claim}
    stages = {s: 10.0 + i for i, s in enumerate(["stem", "stage 1", "stage 2", "stage 3", "stage 4", "head"])}
    table = pd.DataFrame([{"model_id": m, "method": v, "variant": v, "seed": s, "epoch": 40, "final_epoch": 40,
                           "final": True, "arch": "a", "clean_test_acc": acc, "avg": 12.0 + s, **stages}
                          for m, v, s, acc in [("r0", "standard", 0, 87.0), ("r1", "standard", 1, 86.0),
                                               ("a0", "adv", 0, 70.0)]])
    try:
        parsed = claims_from_dict({"rules": rules, "claims": [claim]}, "claims.toml")
    except LayercritError:
        return
    with contextlib.suppress(LayercritError):
        cells, verdicts = judge_claims({"criticality": table, "disagreement": table}, parsed)
        assert set(verdicts["verdict"]) <= {"holds", "does not hold", "inconclusive", "pending"}


# ---------------------------------------------------------------------------------------------------------------
# data folders as real machines leave them (issue 24): nothing hangs, nothing is mislabelled. The rules are the
# table in docs/data.md; tests/test_data_rules.py checks each row's exact outcome in-process, these cases check
# them through every command that reads images.

DATA_TIMEOUT = 60  # an image read that blocked (a FIFO, a device) would hang forever: past 60 s the case fails


def _special_files(root: Path) -> list[str]:
    """Image names that are not regular files, in class folders of ``root``: a FIFO, a socket, a link to
    /dev/zero and (where mknod is allowed) a character device. Returns them relative to ``root``."""
    import socket
    import stat

    os.mkfifo(root / "c1" / "pipe.png")
    with socket.socket(socket.AF_UNIX) as s:  # bound at a short path (sun_path holds 108 bytes), moved into place
        short = Path("/tmp", f"lc-{os.getpid()}-{time.monotonic_ns()}.png")
        s.bind(str(short))
    os.rename(short, root / "c2" / "sock.png")
    os.symlink("/dev/zero", root / "c3" / "zero.png")
    made = ["c1/pipe.png", "c2/sock.png", "c3/zero.png"]
    try:
        os.mknod(root / "c4" / "dev.png", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero's numbers
        made.append("c4/dev.png")
    except OSError:
        pass  # mknod needs CAP_MKNOD: the link to /dev/zero stands in for a device node
    return made


def _poison(root: Path) -> list[str]:
    """What a user's machine leaves in a data folder: Jupyter's checkpoints folder holding images beside the
    class folders (it would become class 0), an AppleDouble file, a hidden folder of images inside a class
    and the special files of :func:`_special_files`."""
    (root / ".ipynb_checkpoints").mkdir()
    for i in range(3):
        Image.new("RGB", (32, 32), (i, 0, 0)).save(root / ".ipynb_checkpoints" / f"{i}-checkpoint.png")
    (root / "c0" / "._0.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    (root / "c5" / ".cache").mkdir()
    Image.new("RGB", (32, 32)).save(root / "c5" / ".cache" / "thumb.png")
    return _special_files(root)


def _assert_poison_reported(proc: subprocess.CompletedProcess, root: Path, special: list[str]) -> None:
    """One warning line for the hidden entries and one for the special files of ``root``; nothing from PIL."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith(f"layercrit: warning: data folder {root}:")]
    hidden = [line for line in lines if "hidden or system entries" in line]
    assert len(hidden) == 1 and "skipped 3 hidden" in hidden[0] and ".ipynb_checkpoints" in hidden[0], lines
    specials = [line for line in lines if "not regular files" in line]
    assert len(specials) == 1 and f"skipped {len(special)} image names" in specials[0], lines
    assert "c1/pipe.png (a FIFO), c2/sock.png (a socket), c3/zero.png (a link to character device)" in specials[0]
    for noise in ("Warning:", "warnings.warn", "Palette images", "DecompressionBomb"):
        assert noise not in proc.stderr, proc.stderr[-2000:]


def _timed(*args, cwd: Path, env: dict) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = layercrit(*args, cwd=cwd, env=env, timeout=DATA_TIMEOUT)
    return proc, time.monotonic() - start


def test_data_special_files_and_hidden_folders_measure(world, tmp_path):
    """measure: a FIFO, a socket and a device among the images are skipped with one warning line within seconds;
    `.ipynb_checkpoints` holding images is no class (else 11 classes would not fit the 10-class model)."""
    data = tmp_path / "data"
    shutil.copytree(world.data, data)
    special = _poison(data)
    proc, took = _timed("measure", *MODEL, "--data", data, "--db", tmp_path / "s.db", *QUICK, "--samples", "20",
                        cwd=tmp_path, env=world.env)
    assert_clean_success(proc)
    _assert_poison_reported(proc, data, special)
    print(f"measure on a folder with {', '.join(special)}: {took:.1f} s")
    proc = layercrit("measure", *MODEL, "--data", data, "--db", tmp_path / "t.db", *QUICK, "--samples", "21",
                     cwd=tmp_path, env=world.env, timeout=DATA_TIMEOUT)  # 20 images: hidden ones never count
    assert_one_error(proc, "more than the 20 images")


def test_data_special_files_and_hidden_folders_train(world, tmp_path):
    """train (the training lab's data path): the same rules in train/ and test/; the run records 10 classes."""
    root = tmp_path / "cifar"
    shutil.copytree(world.inputs / "cifar", root)
    special = {split: _poison(root / split) for split in ("train", "test")}
    proc, took = _timed("train", "--method", "standard", "--data", root, "--out", tmp_path / "run", "--epochs", "1",
                        "--batch-size", "10", "--threads", "1", "--no-progress", cwd=tmp_path, env=world.env)
    assert_clean_success(proc)
    for split in ("train", "test"):
        _assert_poison_reported(proc, root / split, special[split])
    side = json.loads((tmp_path / "run" / "run.json").read_text())
    assert side["data"]["classes"] == [f"c{c}" for c in range(10)] and side["data"]["train_images"] == 20
    print(f"train on folders with special files: {took:.1f} s")


def _huge(path: Path) -> None:
    Image.new("1", (10_000, 10_000)).save(path)  # 100 Mpx (12 kB on disk): over PIL's 89.5 Mpx bomb warning


@pytest.mark.parametrize("command", ["study run", "compress"])
def test_data_special_files_and_a_huge_image_study_and_compress(command, world, tmp_path):
    """study run and compress: the special files are skipped within seconds, then the huge image is refused in
    one line naming the file and the limit (before it is decoded)."""
    data = tmp_path / "data"
    shutil.copytree(world.data, data)
    special = _poison(data)
    _huge(data / "c6" / "big.png")
    if command == "study run":
        (tmp_path / "study.toml").write_text(f'[study]\ndata = "{data}"\nsamples = 21\ntrials = 1\n'
                                             '[[models]]\nid = "m"\nspec = "arch:cifar_resnet50"\n')
        args = ["study", "run", tmp_path / "study.toml", "--db", tmp_path / "s.db", "--no-progress"]
    else:
        args = ["compress", "--model", f"file:{world.ckpt}", "--arch", "cifar_resnet50", "--data", data,
                "--samples", "21", "--remove", "1", "--out", tmp_path / "out", "--no-progress"]
    before = snapshot(world.inputs)
    proc, took = _timed(*args, cwd=tmp_path, env=world.env)
    assert_one_error(proc, f"image {data / 'c6' / 'big.png'} is 10000 x 10000 px", "over the limit of 89,478,485")
    _assert_poison_reported(proc, data, special)
    assert not (tmp_path / "s.db").exists() and not (tmp_path / "out").exists()
    assert changes(before, snapshot(world.inputs)) == []
    print(f"{command} on a folder with special files and a huge image: {took:.1f} s")


def _png_header_only(path: Path, w: int, h: int) -> None:
    """A PNG that declares w x h pixels and holds none."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IEND", b""))


def _convertible(root: Path) -> None:
    """One image of every kind that is converted (docs/data.md), in class c0..c9 of a copy of the world's data."""
    pal = Image.new("P", (32, 32), 1)
    pal.putpalette([0, 0, 0, 250, 10, 20] + [0] * 762)
    for i in range(3):
        pal.save(root / "c0" / f"pt{i}.png", transparency=1)  # palette + transparency: PIL warns on convert("RGB")
    Image.new("RGBA", (32, 32), (5, 6, 7, 0)).save(root / "c1" / "rgba.png")
    Image.new("LA", (32, 32), (128, 100)).save(root / "c1" / "la.png")
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(root / "c2" / "cmyk.jpg")
    Image.fromarray(np.full((32, 32), 40000, dtype=np.uint16)).save(root / "c3" / "g16.png")
    Image.fromarray(np.full((32, 32), 0.25, dtype=np.float32)).save(root / "c4" / "f.tiff")
    Image.new("RGB", (1, 1), (9, 8, 7)).save(root / "c5" / "dot.png")  # tiny: upscaled
    Image.new("1", (32, 32), 1).save(root / "c6" / "bits.png")
    Image.new("RGB", (32, 32)).save(root / "c7" / "new\nline.png")
    Image.new("RGB", (32, 32)).save(root / "c8" / os.fsdecode(b"caf\xe9.png"))


DATA_REFUSED = [  # (name, setup(class folder c9), words of the one error line)
    ("huge", lambda c: _huge(c / "big.png"), ("big.png is 10000 x 10000 px", "89,478,485", "downscale")),
    ("bomb", lambda c: _png_header_only(c / "bomb.png", 30_000, 30_000), ("bomb.png has more than twice",)),
    ("empty", lambda c: (c / "empty.png").write_bytes(b""), ("empty.png is empty (0 bytes)",)),
    ("truncated", lambda c: (c / "cut.png").write_bytes((c / "0.png").read_bytes()[:60]), ("cut.png is damaged",)),
    ("not-an-image", lambda c: (c / "text.jpg").write_text("hello"), ("text.jpg is not an image PIL can read",)),
    ("link-to-nothing", lambda c: os.symlink(c / "gone", c / "gone.png"), ("gone.png is a link to nothing",)),
    ("int-beyond-16-bits", lambda c: Image.fromarray(np.full((8, 8), 70000, dtype=np.int32)).save(c / "i.tiff"),
     ("i.tiff has pixel mode I with values in [70000, 70000], beyond 16 bits",)),
    ("name-newline-not-utf8", lambda c: (c / os.fsdecode(b"bad\n\xe9.png")).write_bytes(b"not an image"),
     ("bad\\n\\xe9.png is not an image",)),
]


@pytest.fixture(scope="module")
def data_rows(world):
    """measure on a copy of the world's data with one image kind of docs/data.md's table added: the convertible
    kinds together, each refused kind alone (two at a time); name -> (proc, folder)."""
    def run(row):
        name, setup, samples = row
        d = world.case_dir(f"data-{name}")
        shutil.copytree(world.data, d / "data")
        setup(d / "data")
        proc = layercrit("measure", *MODEL, "--data", d / "data", "--db", d / "s.db", *QUICK, "--samples", samples,
                         cwd=d, env=world.env, timeout=DATA_TIMEOUT)
        return name, (proc, d / "data")

    # every image drawn: the 20 of the world's data and the 12 convertible ones, or the one refused
    rows = [("convertible", _convertible, "32")] + [(name, lambda root, s=setup: s(root / "c9"), "21")
                                                    for name, setup, _ in DATA_REFUSED]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, rows))


def test_data_convertible_kinds_measure_with_one_line_each(world, data_rows):
    proc, data = data_rows["convertible"]
    assert_clean_success(proc)
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("layercrit: warning: data folder")]
    assert warnings == [
        f"layercrit: warning: data folder {data}: 5 images with transparent pixels (e.g. c0/pt0.png) converted to "
        "RGB by dropping the alpha channel, as torchvision's loader does (transparent pixels show the colour stored "
        "under them)",
        f"layercrit: warning: data folder {data}: 1 CMYK image (e.g. c2/cmyk.jpg) converted to RGB without colour "
        "management (colours may differ from what a viewer shows)"], proc.stderr
    for noise in ("Warning:", "warnings.warn", "Palette images"):
        assert noise not in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("name,needles", [(name, needles) for name, _, needles in DATA_REFUSED],
                         ids=[name for name, _, _ in DATA_REFUSED])
def test_data_refused_kinds_measure_in_one_line(name, needles, world, data_rows):
    proc, data = data_rows[name]
    line = assert_one_error(proc, *needles)
    assert not (data.parent / "s.db").exists(), "a refused image must not create the database"
    assert f"image {data / 'c9'}/" in line, line
