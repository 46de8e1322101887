"""Every bad input: one line naming the problem, exit 2, no traceback, nothing written."""
import argparse
import pickle
import sqlite3

import pytest
import torch
from PIL import Image

from conftest import CIFAR_TEST, need, run_cli, run_cli_process
from layercrit.models import create_model


def _image_folder(root, classes=("a", "b"), per_class=3, size=32, bad=None):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (size, size), (i * 40, 10, 200)).save(root / c / f"{i}.png")
    if bad:
        (root / classes[0] / bad).write_bytes(b"this is not an image")
    return root


@pytest.fixture
def folder(tmp_path):
    return _image_folder(tmp_path / "data", classes=tuple("abcdefghij"))


def _assert_clean_error(proc, *needles, db=None):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("layercrit: error:"), lines[0]
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    if db is not None:
        assert not db.exists(), "a failed run must not write the database"


def _measure(db, *args):
    return run_cli("measure", "--db", str(db), "--no-progress", "--trials", "1", *args)


def test_unknown_model_spec(tmp_path, folder):
    db = tmp_path / "s.db"
    # once as a real process: exit status and stderr exactly as a user sees them
    proc = run_cli_process("measure", "--db", str(db), "--model", "hub:foo", "--data", str(folder))
    _assert_clean_error(proc, "unknown model spec", db=db)
    _assert_clean_error(_measure(db, "--model", "arch:no_such_net", "--data", str(folder)), "no_such_net", db=db)


def test_missing_checkpoint(tmp_path, folder):
    db = tmp_path / "s.db"
    proc = _measure(db, "--model", f"file:{tmp_path}/nope.safetensors", "--arch", "cifar_resnet50", "--data", str(folder))
    _assert_clean_error(proc, "checkpoint not found", "nope.safetensors", db=db)


def test_checkpoint_that_does_not_fit_names_keys(tmp_path, folder):
    wide = create_model("arch:cifar_resnet50_w32")
    ckpt = tmp_path / "wide.pt"
    state = wide.network.state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["fc.bias"]
    torch.save({"state_dict": state, "epoch": 3}, ckpt)
    db = tmp_path / "s.db"
    proc = _measure(db, "--model", f"file:{ckpt}", "--arch", "cifar_resnet50", "--data", str(folder))
    _assert_clean_error(proc, "does not fit", "missing 1: fc.bias", "unexpected 1: extra.weight", "wrong shape",
                        db=db)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pickle_needing_arbitrary_objects_is_refused_without_running_it(tmp_path, folder):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    ckpt = tmp_path / "evil.pt"
    with open(ckpt, "wb") as f:
        pickle.dump({"state_dict": {"w": torch.zeros(1)}, "payload": evil}, f)
    db = tmp_path / "s.db"
    proc = _measure(db, "--model", f"file:{ckpt}", "--arch", "cifar_resnet50", "--data", str(folder))
    _assert_clean_error(proc, "arbitrary unpickling", "--trust-pickle", db=db)
    assert not marker.exists(), "the pickle's code ran"


def test_trust_pickle_opt_in_loads_old_style_checkpoints(tmp_path, folder):
    bundle = create_model("arch:cifar_resnet50", init_seed=3)
    ckpt = tmp_path / "old.pth"
    torch.save({"model": {f"module.{k}": v for k, v in bundle.network.state_dict().items()},
                "args": argparse.Namespace(lr=0.1)}, ckpt)
    db = tmp_path / "s.db"
    args = ["--model", f"file:{ckpt}", "--arch", "cifar_resnet50", "--data", str(folder), "--samples", "4",
            "--layers", "fc"]
    _assert_clean_error(_measure(db, *args), "arbitrary unpickling", db=db)
    proc = _measure(db, *args, "--trust-pickle")
    assert proc.returncode == 0, proc.stderr
    weights = sqlite3.connect(db).execute("SELECT weights_sha256 FROM runs").fetchone()[0]
    assert weights == bundle.checksum()


def test_data_folder_missing_empty_or_unreadable(tmp_path):
    db = tmp_path / "s.db"
    model = ["--model", "arch:cifar_resnet50"]
    _assert_clean_error(_measure(db, *model, "--data", str(tmp_path / "nowhere")), "data folder not found", db=db)
    (tmp_path / "empty").mkdir()
    _assert_clean_error(_measure(db, *model, "--data", str(tmp_path / "empty")), "no class folders", db=db)
    (tmp_path / "noimg" / "cat").mkdir(parents=True)
    (tmp_path / "noimg" / "cat" / "notes.txt").write_text("x")
    _assert_clean_error(_measure(db, *model, "--data", str(tmp_path / "noimg")), "holds no images", db=db)
    bad = _image_folder(tmp_path / "bad", classes=tuple("abcdefghij"), bad="broken.jpg")
    _assert_clean_error(_measure(db, *model, "--data", str(bad), "--samples", "all"), "is not an image PIL can read",
                        "broken.jpg", db=db)
    (tmp_path / "splits" / "train").mkdir(parents=True)
    (tmp_path / "splits" / "test").mkdir(parents=True)
    _assert_clean_error(_measure(db, *model, "--data", str(tmp_path / "splits")), "split folders", db=db)


def test_too_many_samples(tmp_path, folder):
    db = tmp_path / "s.db"
    proc = _measure(db, "--model", "arch:cifar_resnet50", "--data", str(folder), "--samples", "31")
    _assert_clean_error(proc, "--samples 31 is more than the 30 images", db=db)


def test_layer_pattern_matching_nothing(tmp_path, folder):
    db = tmp_path / "s.db"
    proc = _measure(db, "--model", "arch:cifar_resnet50", "--data", str(folder), "--samples", "4",
                    "--layers", "layer9.*")
    _assert_clean_error(proc, "layer9.*", "matches no layer", db=db)


def test_class_count_mismatch(tmp_path):
    data = _image_folder(tmp_path / "three", classes=("x", "y", "z"))
    db = tmp_path / "s.db"
    proc = _measure(db, "--model", "arch:cifar_resnet50", "--data", str(data), "--samples", "4")
    _assert_clean_error(proc, "10 outputs", "3 classes", "--num-classes 3", db=db)
    ok = _measure(db, "--model", "arch:cifar_resnet50", "--num-classes", "3", "--data", str(data), "--samples", "4",
                  "--layers", "fc")
    assert ok.returncode == 0, ok.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is available here")
def test_unavailable_device(tmp_path, folder):
    db = tmp_path / "s.db"
    proc = _measure(db, "--model", "arch:cifar_resnet50", "--data", str(folder), "--device", "cuda")
    _assert_clean_error(proc, "not available", "--device cpu", db=db)


def test_different_config_for_same_model_id(tmp_path, folder):
    db = tmp_path / "s.db"
    base = ["--model", "arch:cifar_resnet50", "--data", str(folder), "--samples", "4", "--layers", "fc"]
    assert _measure(db, *base).returncode == 0
    before = sqlite3.connect(db).execute("SELECT count(*) FROM results").fetchone()[0]
    proc = _measure(db, *base[:-2], "--layers", "conv1", "--seed", "1")
    _assert_clean_error(proc, "already in", "different configuration", "seed")
    assert sqlite3.connect(db).execute("SELECT count(*) FROM results").fetchone()[0] == before
    # a different model under its own id goes into the same database
    other = _measure(db, *base, "--init-seed", "1", "--name", "other")
    assert other.returncode == 0, other.stderr
    assert sqlite3.connect(db).execute("SELECT count(*) FROM runs").fetchone()[0] == 2


def test_bad_reset_and_export_errors(tmp_path, folder):
    db = tmp_path / "s.db"
    proc = _measure(db, "--model", "arch:cifar_resnet50", "--data", str(folder), "--samples", "4", "--reset", "shuffle")
    _assert_clean_error(proc, "unknown reset 'shuffle'", db=db)
    proc = _measure(db, "--model", "arch:cifar_resnet50", "--data", str(folder), "--samples", "4",
                    "--reset", "interpolate:2")
    _assert_clean_error(proc, "alpha", db=db)
    _assert_clean_error(run_cli("export", "--db", str(db), "--out", str(tmp_path / "x.csv")), "not found")
    assert _measure(db, "--model", "arch:cifar_resnet50", "--data", str(folder), "--samples", "4",
                    "--layers", "fc").returncode == 0
    _assert_clean_error(run_cli("export", "--db", str(db), "--out", str(tmp_path / "x.xlsx")), ".csv or .parquet")


def test_help_is_a_reference():
    proc = run_cli("measure", "--help")
    assert proc.returncode == 0
    for needle in ("--model", "--reset", "interpolate:<alpha>", "file:<path> --arch", "--samples", "--db"):
        assert needle in proc.stdout


def test_real_cifar_folder_without_split(tmp_path):
    root = need(CIFAR_TEST).parent
    db = tmp_path / "s.db"
    _assert_clean_error(_measure(db, "--model", "arch:cifar_resnet50", "--data", str(root)), "split folders",
                        str(root / "test"), db=db)
