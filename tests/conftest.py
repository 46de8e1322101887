"""Shared fixtures: a tiny CNN with its factory, tiny generated data, paths to ../shared/data."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from layercrit import EvalData

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CIFAR_TEST = SHARED_DATA / "cifar10" / "test"
IMAGENET_VAL = SHARED_DATA / "imagenet-sample" / "val"


def noise_image_folder(root: Path, classes: int | list[str] = 10, per_class: int = 2,
                       size: int | tuple[int, int] = 32, seed: int = 0) -> Path:
    """An image folder of uniform-noise PNGs (class folders ``class0``... or the names given), drawn class by
    class from one seeded generator: the same folder, pixel for pixel, in every test that asks for it."""
    from PIL import Image

    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    for c in (classes if isinstance(classes, list) else [f"class{c}" for c in range(classes)]):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=g).numpy()).save(
                root / c / f"{i}.png")
    return root


def need(path: Path) -> Path:
    if not path.is_dir():
        pytest.skip(f"{path} is absent (the shared data lies beside the project in ../shared/data)")
    return path


class TinyCNN(nn.Module):
    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test gets its own cache folder: nothing is written to the user's ~/.cache."""
    monkeypatch.setenv("LAYERCRIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def tiny_model():
    torch.manual_seed(123)
    return TinyCNN(), TinyCNN


@pytest.fixture
def tiny_data():
    g = torch.Generator().manual_seed(7)
    images = torch.randint(0, 256, (48, 3, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 4, (48,), generator=g)
    return EvalData.from_tensors(images, labels, ["a", "b", "c", "d"])


def run_cli(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    """Run the CLI's ``main`` in this process (fast); stdout/stderr captured as a user would see them."""
    import contextlib
    import io

    from layercrit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse: --help, usage errors
            code = e.code if isinstance(e.code, int) else 1
    proc = subprocess.CompletedProcess(["layercrit", *args], code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"layercrit {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def interruptible() -> None:
    """``preexec_fn`` for a CLI subprocess a test interrupts with SIGINT: a shell starts background jobs
    (``nohup pytest &``) with SIGINT ignored, the child would inherit that, and Python then keeps ignoring
    it; the default disposition makes Python install its KeyboardInterrupt handler as in a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli_process(*args: str, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess, exactly as a user would (slower: imports torch each time)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "layercrit.cli", *args], capture_output=True, text=True,
                          env=env, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"layercrit {' '.join(args)} failed:\n{proc.stderr}")
    return proc
