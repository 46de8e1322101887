"""Bring your own model (issue 13): architectures from the user's code, the class count from the checkpoint,
normalization never silently absent, a notebook API that does what it reads like, the main job's closing lines,
a fast `--help`, and a real third-party model (akamaster's CIFAR-10 ResNet-20) measured through the CLI."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import layercrit as lc
from conftest import ROOT, SHARED_DATA, need, run_cli
from layercrit.errors import ConfigError, LayercritError

FIXTURE = ROOT / "tests" / "fixtures" / "akamaster_resnet.py"
AKAMASTER = SHARED_DATA.parent / "models" / "akamaster-resnet20" / "resnet20-12fca82f.th"
IMAGENET_NORM = ["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]

NET_PY = """
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes=4):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def net(num_classes=4):
    return Net(num_classes)


def fixed():  # takes no num_classes: always 3 classes
    return Net(3)


def broken(num_classes=4):
    return "not a module"
"""


@pytest.fixture
def net_py(tmp_path):
    path = tmp_path / "mynets.py"
    path.write_text(NET_PY)
    return path


def _folder(root: Path, classes: int = 4, per_class: int = 3, size: int = 8) -> Path:
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (size, size), (i * 60, c * 50, 100)).save(root / f"c{c}" / f"{i}.png")
    return root


def _tiny_data(n: int = 48, classes: int = 4) -> lc.EvalData:
    g = torch.Generator().manual_seed(7)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    return lc.EvalData.from_tensors(images, torch.arange(n) % classes)


def _identity(db: Path) -> dict:
    with sqlite3.connect(db) as con:
        return json.loads(con.execute("SELECT identity FROM runs").fetchone()[0])


# --- 1. architectures from the user's code ---------------------------------------------------------------

def test_arch_from_a_file_and_from_a_module(net_py, tmp_path, monkeypatch):
    bundle = lc.create_model(f"arch:{net_py}:net", num_classes=5, normalize=None)
    assert bundle.model_id == "net" and bundle.num_classes == 5 and bundle.model(torch.rand(2, 3, 8, 8)).shape == (2, 5)
    assert bundle.arch_code is not None and bundle.arch_code["callable"] == "net"
    assert len(bundle.arch_code["sha256"]) == 64
    again = lc.create_model(f"arch:{net_py}:net", num_classes=5, normalize=None)
    assert type(again.network) is type(bundle.network)  # the file's text runs once per process
    fixed = lc.create_model(f"arch:{net_py}:fixed", normalize=None)  # no num_classes parameter: called with none
    assert fixed.num_classes == 3
    monkeypatch.chdir(tmp_path)  # package.module:callable, found from the current folder as `python -m` would
    assert lc.create_model("arch:mynets:net", normalize=None).network.head.out_features == 4


@pytest.mark.parametrize("arch, needles", [
    ("nowhere.py:net", ("architecture file not found", "nowhere.py")),
    ("{py}:resnet99", ("defines no 'resnet99'", "Net, broken, fixed, net")),
    ("{py}:broken", ("returned a str, not a torch.nn.Module",)),
    ("{bad}:net", ("SyntaxError", "line 1")),
    ("no_such_module_xyz:net", ("no Python module 'no_such_module_xyz'",)),
    ("resnet.py", ("unknown architecture", "path/to/file.py:callable")),
])
def test_arch_reference_errors_are_one_clear_line(net_py, tmp_path, arch, needles):
    (tmp_path / "bad.py").write_text("def net(:\n")
    arch = arch.format(py=net_py, bad=tmp_path / "bad.py")
    proc = run_cli("layers", "--model", f"arch:{arch}", "--normalize", "none", "--input-size", "8")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("layercrit: error:") and all(n in line for n in needles), line


def test_resume_with_a_changed_architecture_file_is_refused(net_py, tmp_path):
    data = _folder(tmp_path / "data")
    db = tmp_path / "s.db"
    args = ["measure", "--model", f"arch:{net_py}:net", "--normalize", "none", "--input-size", "8",
            "--data", str(data), "--samples", "all", "--trials", "1", "--db", str(db), "--no-progress"]
    run_cli(*args, check=True)
    identity = _identity(db)
    assert identity["arch_code"]["file"] == str(net_py) and identity["arch_code"]["callable"] == "net"
    assert run_cli(*args).returncode == 0  # same file: resumes (nothing left to do)
    net_py.write_text(NET_PY.replace("torch.relu", "torch.tanh"))  # same weights, another network
    proc = run_cli(*args)
    assert proc.returncode == 2 and "already in" in proc.stderr and "arch_code" in proc.stderr, proc.stderr


def test_study_file_model_from_the_users_code(net_py, tmp_path):
    """A study's spec model may be an architecture in the user's code (paths relative to the study file), with
    its input size and normalization given there."""
    (tmp_path / "code").mkdir()
    net_py.rename(tmp_path / "code" / "mynets.py")
    _folder(tmp_path / "data" / "test")
    study = tmp_path / "own.toml"
    study.write_text("""
[study]
name = "own"
data = "data"
samples = 12
trials = 1

[[models]]
id = "mine"
spec = "arch:code/mynets.py:net"
input_size = 8
normalize = "none"
""")
    db = tmp_path / "own.db"
    run_cli("study", "run", str(study), "--db", str(db), "--no-progress", check=True)
    identity = _identity(db)
    assert identity["arch_code"]["file"] == str(tmp_path / "code" / "mynets.py") and identity["normalize"] is None
    study.write_text(study.read_text().replace('normalize = "none"', 'mean = [0.5, 0.5]\nstd = [0.5, 0.5]'))
    proc = run_cli("study", "run", str(study), "--db", str(db), "--no-progress")
    assert proc.returncode == 2 and "model mine: mean has 2 value(s)" in proc.stderr, proc.stderr


# --- 2. the class count from the checkpoint ----------------------------------------------------------------

def test_class_count_from_the_checkpoints_last_linear(net_py, tmp_path):
    src = lc.create_model(f"arch:{FIXTURE}:resnet20", num_classes=7, normalize=None)
    # a third-party training script's file: a dict with a DataParallel "module." prefix, head called "linear"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.network.state_dict().items()}, "best_prec1": 1.0},
               tmp_path / "r20.th")
    proc = run_cli("layers", "--model", f"file:{tmp_path / 'r20.th'}", "--arch", f"{FIXTURE}:resnet20",
                   "--normalize", "none", "--input-size", "32")
    assert proc.returncode == 0, proc.stderr
    assert "7 classes, from the checkpoint's linear.weight (7 x 64)" in proc.stderr  # one info line says so
    assert proc.stdout.splitlines()[-1].split() == ["19", "Linear", "linear"]  # forward order, 20 layers
    timm_net = lc.create_model("arch:resnet18", num_classes=10).network  # a timm architecture, head "fc"
    torch.save(timm_net.state_dict(), tmp_path / "r18.pt")
    bundle = lc.create_model(f"file:{tmp_path / 'r18.pt'}", arch="resnet18")
    assert bundle.num_classes == 10 and bundle.network.fc.out_features == 10
    with pytest.raises(LayercritError, match="does not fit"):  # an explicit class count that disagrees
        lc.create_model(f"file:{tmp_path / 'r18.pt'}", arch="resnet18", num_classes=100)


# --- 3. normalization is never silently absent --------------------------------------------------------------

def test_normalization_must_be_chosen_and_is_recorded(net_py, tmp_path):
    data = _folder(tmp_path / "data")
    base = ["measure", "--model", f"arch:{net_py}:net", "--input-size", "8", "--data", str(data), "--samples", "all",
            "--trials", "1", "--no-progress"]
    proc = run_cli(*base, "--db", str(tmp_path / "none.db"))
    assert proc.returncode == 2 and not (tmp_path / "none.db").exists()
    (line,) = proc.stderr.strip().splitlines()
    assert "no known input normalization" in line and "--mean" in line and "--normalize none" in line, line
    run_cli(*base, "--db", str(tmp_path / "raw.db"), "--normalize", "none", check=True)
    assert _identity(tmp_path / "raw.db")["normalize"] is None
    run_cli(*base, "--db", str(tmp_path / "in.db"), *IMAGENET_NORM, check=True)
    assert _identity(tmp_path / "in.db")["normalize"] == [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]
    assert run_cli(*base, "--db", str(tmp_path / "x.db"), "--normalize", "none", "--mean", "0,0,0",
                   "--std", "1,1,1").returncode == 2
    with pytest.raises(ConfigError, match=r"give normalize=\(mean, std\) or normalize=None"):
        lc.measure(torch.nn.Linear(3, 2), _tiny_data(), reset="zero", progress=False)
    with pytest.raises(ConfigError, match=r"give normalize=\(mean, std\) or normalize=None"):
        lc.create_model(f"arch:{net_py}:net")


# --- 4. a notebook API that does what it reads like ---------------------------------------------------------

def test_measure_an_in_memory_module_on_data_already_drawn(tmp_path, tiny_model):
    model, factory = tiny_model
    data = _tiny_data(48)  # fewer than the default 10,000: an already-drawn set is measured whole
    zero = lc.measure(model, data, normalize=None, reset="zero", progress=False)  # needs no factory
    assert (zero.n_samples == 48).all() and zero.layer.tolist() == ["conv1", "conv2", "fc"]
    with pytest.raises(ConfigError, match="pass factory") as e:  # random draws need one; the message says so
        lc.measure(model, data, normalize=None, progress=False)
    assert "--" not in str(e.value)
    with pytest.raises(ConfigError, match=r"^samples 100 is more than the 48 images available: use samples 48"):
        lc.measure(model, data, normalize=None, reset="zero", samples=100, progress=False)
    torch.save(factory().state_dict(), tmp_path / "init.pt")
    kw = dict(reset=[f"init:{tmp_path / 'init.pt'}", "random"], trials=1, progress=False)
    bundle = lc.ModelBundle.from_module(model, factory, normalize=None, model_id="tiny", category="mine")
    memory = lc.measure(bundle, data, **kw)
    stored = lc.measure(bundle, data, store=tmp_path / "s.db", **kw)
    assert list(memory.columns) == list(stored.columns) and (memory.dtypes == stored.dtypes).all()
    drop = ["elapsed_seconds"]
    assert memory.drop(columns=drop).equals(stored.drop(columns=drop))
    assert memory.model_id.unique().tolist() == ["tiny"] and memory.category.unique().tolist() == ["mine"]
    init_only = lc.measure(model, data, normalize=None, **{**kw, "reset": f"init:{tmp_path / 'init.pt'}"})  # no factory
    assert init_only.criticality.tolist() == memory[memory.reset.str.startswith("init")].criticality.tolist()


def test_register_arch_as_a_call_and_as_a_decorator():
    from conftest import TinyCNN

    lc.register_arch("test13_called", TinyCNN, num_classes=4, input_size=8, normalize=None)
    assert lc.create_model("arch:test13_called").num_classes == 4

    @lc.register_arch("test13_decorated", num_classes=4, input_size=8, mean=(0.5,) * 3, std=(0.25,) * 3)
    def build(num_classes=4):
        return TinyCNN(num_classes)

    assert lc.create_model("arch:test13_decorated").model.normalize
    lc.register_arch("test13_forgotten", num_classes=4, input_size=8)  # no factory, decorator never applied
    with pytest.raises(LayercritError, match="without the function that builds it") as e:
        lc.create_model("arch:test13_forgotten")
    assert "@register_arch" in str(e.value)
    lc.register_arch("test13_unknown_norm", TinyCNN, num_classes=4, input_size=8)  # normalization: chosen later
    with pytest.raises(ConfigError, match="no known input normalization"):
        lc.create_model("arch:test13_unknown_norm")
    assert not lc.create_model("arch:test13_unknown_norm", normalize=None).model.normalize


# --- 6. the main job says what it did and what next; the progress bar counts what it says ------------------

def test_closing_lines_warn_about_an_untrained_model_at_chance(net_py, tmp_path):
    data = _folder(tmp_path / "data", classes=4, per_class=10)
    db = tmp_path / "s.db"
    proc = run_cli("measure", "--model", f"arch:{net_py}:net", "--normalize", "none", "--input-size", "8",
                   "--data", str(data), "--samples", "all", "--trials", "1", "--db", str(db), check=True)
    out = proc.stdout.splitlines()
    assert out[0].startswith(f"net: 2 rows in {db}; base top-1 ") and "mean criticality (random)" in out[0]
    assert out[-1].startswith(f"next: layercrit report --db {db} --out report/")
    assert f"layercrit export --db {db}" in out[-1]
    warnings = [x for x in proc.stderr.splitlines() if x.startswith("layercrit: warning:")]
    assert any("untrained" in w for w in warnings) and any("at chance level for 4 classes" in w for w in warnings)
    assert "2.0/2 layer resets x 40 images" in proc.stderr  # the bar counts layer resets, with rate and ETA
    assert "reset/s" in proc.stderr or "s/reset" in proc.stderr


def test_chance_level():
    from layercrit.cli.measure import at_chance

    assert at_chance(10.5, 10, 1000) and at_chance(3.0, 10, 1000) and not at_chance(15.0, 10, 1000)
    assert not at_chance(81.0, 10, 1000)


# --- 7. a fast CLI ---------------------------------------------------------------------------------------

def test_help_imports_neither_torch_nor_pandas():
    code = """
import sys
from layercrit.cli import COMMAND_MODULES, main
commands = [[], ["measure"], ["export"], ["layers"], ["archs"], ["zoo"], ["zoo", "list"], ["report"], ["train"],
            ["study"], ["study", "run"], ["compress"], ["compress-compare"]]
for argv in commands:
    try:
        main([*argv, "--help"])
    except SystemExit:
        pass
heavy = [m for m in ("torch", "pandas", "timm", "torchvision", "numpy") if m in sys.modules]
print("HEAVY", heavy, file=sys.stderr)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stderr, proc.stderr[-2000:]
    assert "usage: layercrit measure" in proc.stdout and "usage: layercrit train" in proc.stdout


# --- the real third-party model ---------------------------------------------------------------------------

def test_akamaster_resnet20_through_the_cli(tmp_path):
    """A CIFAR-10 ResNet-20 trained elsewhere, its architecture written from its README (tests/fixtures):
    the class count from the checkpoint, the documented normalization, clean top-1 on 1,000 test images."""
    data = need(SHARED_DATA / "cifar10" / "test")
    if not AKAMASTER.is_file():
        pytest.skip(f"{AKAMASTER} is absent (the shared models lie beside the project in ../shared/models)")
    db = tmp_path / "study.db"
    proc = run_cli("measure", "--model", f"file:{AKAMASTER}", "--arch", f"{FIXTURE}:resnet20", *IMAGENET_NORM,
                   "--input-size", "32", "--data", str(data), "--samples", "1000", "--layers", "conv1", "linear",
                   "--trials", "1", "--name", "akamaster_resnet20", "--db", str(db), "--no-progress", check=True)
    assert "warning" not in proc.stderr, proc.stderr  # trained, far above chance
    with sqlite3.connect(db) as con:
        top1, identity = con.execute("SELECT base_top1_acc, identity FROM runs").fetchone()
        rows = con.execute("SELECT layer, layer_index FROM results ORDER BY layer_index").fetchall()
    assert top1 >= 78.0, top1  # 91.7 % on lossless CIFAR-10; our JPEG copy costs it about 10 points
    assert rows == [("conv1", 0), ("linear", 19)]  # each layer's index in the whole model's forward order
    identity = json.loads(identity)
    assert identity["normalize"] == [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]
    assert identity["arch_code"]["callable"] == "resnet20" and identity["arch_code"]["file"] == str(FIXTURE)
