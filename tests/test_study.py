"""Study files: a tiny study trains and measures two models end to end; bad files fail in one line."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import run_cli
from layercrit import LayercritError, ResultStore
from layercrit.study import load_study, run_study, training_table
from layercrit.train import parse_eps
from test_train import make_image_folder, one_thread  # noqa: F401  (its autouse fixture applies here too)

ROOT = Path(__file__).resolve().parents[1]

TINY_STUDY = """
[study]
name = "tiny"
data = "../data"          # relative to this file
arch = "cifar_resnet50"
seed = 0
samples = 12
trials = 1
resets = ["random", "init"]

[train]
epochs = 1
batch_size = 32

[[models]]
id = "standard"
name = "Standard SGD"
category = "baseline"
method = "standard"

[[models]]
id = "frozen"
name = "Frozen random backbone"
category = "control"
method = "frozen-random"

[[models]]
id = "untrained"
category = "control"
spec = "arch:cifar_resnet50"
num_classes = 3
"""


@pytest.fixture(scope="module")
def tiny_data_root(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("study") / "data", {"train": 32, "test": 4})


def _study(tmp: Path, text: str, data_root: Path) -> Path:
    folder = tmp / "studies"
    folder.mkdir(exist_ok=True)
    (tmp / "data").exists() or (tmp / "data").symlink_to(data_root, target_is_directory=True)
    path = folder / "tiny.toml"
    path.write_text(text)
    return path


def test_tiny_study_trains_and_measures_two_models_then_skips_everything(tiny_data_root, tmp_path):
    path = _study(tmp_path, TINY_STUDY, tiny_data_root)
    db = tmp_path / "study.db"
    summary = run_study(path, db, progress=False)
    assert [(s["id"], s.get("trained"), s["measured"]) for s in summary] == [
        ("standard", "now", "now"), ("frozen", "now", "now"), ("untrained", None, "now")]
    runs_dir = tmp_path / "studies" / "runs" / "tiny"  # default: next to the study file
    for mid in ("standard", "frozen"):
        assert {p.name for p in (runs_dir / mid).iterdir()} == {"init.safetensors", "model.safetensors", "run.json"}
    with ResultStore(db) as store:
        runs = store.runs().set_index("model_id")
        results = store.results()
    assert set(runs.index) == {"standard", "frozen", "untrained"} and runs["finished"].notna().all()
    assert runs.loc["standard", "category"] == "baseline" and runs.loc["frozen", "category"] == "control"
    assert json.loads(runs.loc["standard", "config"])["samples"] == 12
    for mid in ("standard", "frozen"):
        rows = results[results["model_id"] == mid]
        assert len(rows) == 2 * 54  # 54 layers x (random trial 0 + init)
        assert set(rows["reset"].str.split(":").str[0]) == {"random", "init"}
        assert rows["criticality"].between(0, 100).all()
    # the init reset of the frozen control equals the trained backbone: resetting a conv changes nothing
    frozen = results[(results["model_id"] == "frozen") & results["reset"].str.startswith("init")]
    assert frozen[frozen["layer"] != "fc"]["criticality"].abs().max() < 1e-6
    assert frozen[frozen["layer"] == "fc"]["criticality"].iloc[0] > 0
    assert (results["model_id"] == "untrained").sum() == 54  # a spec model: no init weights, random only
    with open(tmp_path / "study.metadata.csv") as f:
        meta = {r["model_id"]: r for r in csv.DictReader(f)}
    assert meta["standard"]["display_name"] == "Standard SGD" and meta["frozen"]["category"] == "control"
    # rerun through the CLI: nothing trained or measured again
    again = run_cli("study", "run", str(path), "--db", str(db), "--no-progress")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("trained: done  measured: done") == 2 and "measured: done" in again.stdout.splitlines()[2]
    with ResultStore(db) as store:
        assert len(store.results()) == len(results)
    # a clone that kept run.json but not the weights: said as such, not "checkpoint not found: check the path"
    (runs_dir / "frozen" / "model.safetensors").unlink()
    assert training_table(path).set_index("model_id").loc["frozen", "status"] == "weights missing"
    gone = run_cli("study", "run", str(path), "--db", str(tmp_path / "other.db"), "--no-progress", "--only", "frozen")
    errors = [line for line in gone.stderr.splitlines() if line.startswith("layercrit: error:")]
    assert gone.returncode == 2 and len(errors) == 1 and "Traceback" not in gone.stderr
    assert "holds a finished frozen-random run (run.json) without its weights model.safetensors" in errors[0]
    # ... where the weights are read, only: training only, and a model already measured, need none
    assert run_cli("study", "run", str(path), "--db", str(db), "--no-progress").returncode == 0
    assert run_cli("study", "run", str(path), "--db", str(tmp_path / "other.db"), "--no-progress",
                   "--train-only").returncode == 0
    table = run_cli("study", "accuracies", str(path), "--out", str(tmp_path / "acc.csv"))
    assert table.returncode == 0 and "without its weights" in table.stderr
    with open(tmp_path / "acc.csv") as f:
        frozen_row = {r["model_id"]: r for r in csv.DictReader(f)}["frozen"]
    assert frozen_row["clean_test_acc"] != "" and frozen_row["mean_confidence"] == ""


@pytest.mark.parametrize("text, match", [
    ("[study\ndata = 1", "not valid TOML"),
    ('[study]\ndata = "../data"\nsamples = 10\nfoo = 1\n[[models]]\nid = "a"\nmethod = "standard"', "unknown key(s) foo"),
    ('[study]\ndata = "../data"\n[[models]]\nid = "a"\nmethod = "sgd-magic"', "unknown training method 'sgd-magic'"),
    ('[study]\ndata = "../data"\n[[models]]\nid = "a"\nmethod = "standard"\nlearning_rate = 1', "unknown key(s) learning_rate"),
    ('[study]\ndata = "../data"\n[[models]]\nid = "a"\nspec = "arch:x"\nmethod = "standard"', "exactly one of"),
    ('[study]\ndata = "../data"\n[[models]]\nid = "a"\nspec = "arch:cifar_resnet50"\n[[models]]\nid = "a"\nspec = "arch:cifar_resnet50"', "appears twice"),
    ('[study]\ndata = "../data"', "no models"),
    ('[study]\n[[models]]\nid = "a"\nmethod = "standard"', "needs data"),
    ('[study]\ndata = "../data"\n[train]\nepoch = 3\n[[models]]\nid = "a"\nmethod = "standard"', "unknown hyperparameter(s) epoch"),
])
def test_bad_study_files_fail_in_one_clear_line(text, match, tiny_data_root, tmp_path):
    path = _study(tmp_path, text, tiny_data_root)
    with pytest.raises(LayercritError, match=match.replace("(", r"\(").replace(")", r"\)")):
        load_study(path)
    res = run_cli("study", "run", str(path), "--db", str(tmp_path / "x.db"))
    assert res.returncode == 2 and res.stderr.startswith("layercrit: error: ")
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.db").exists()


def test_missing_data_and_only_filter(tiny_data_root, tmp_path):
    path = _study(tmp_path, TINY_STUDY.replace('data = "../data"', 'data = "../nowhere"'), tiny_data_root)
    with pytest.raises(LayercritError, match="data folder .*nowhere not found"):
        run_study(path, tmp_path / "x.db", progress=False)
    with pytest.raises(LayercritError, match="^only resnet: not in tiny.toml"):  # Python: the parameter (the CLI: --only)
        run_study(path, tmp_path / "x.db", only=["resnet"], progress=False)
    assert not (tmp_path / "x.db").exists()


def test_shipped_cifar10_methods_study_is_valid():
    study = load_study(ROOT / "studies" / "cifar10-methods.toml")
    ids = {m.id: m for m in study.models}
    methods = {m.method for m in study.models}
    assert {"standard", "improved", "augmix", "randaugment", "pgd-linf", "pgd-l2", "simclr",
            "frozen-random"} <= methods
    eps = sorted(round(parse_eps(m.hyperparameters["eps"]) * 255, 3) for m in study.models if m.method == "pgd-linf")
    assert eps == [2.0, 8.0]
    assert any(m.method == "pgd-l2" and parse_eps(m.hyperparameters["eps"]) == 0.5 for m in study.models)
    assert study.data == (ROOT.parent / "shared" / "data" / "cifar10").resolve()
    assert study.samples >= 2000 and study.trials == 3 and study.arch == "cifar_resnet50"
    assert len({m.hyperparameters.get("seed") for m in study.models if m.method}) == 1
    assert all(m.category and m.name for m in ids.values())


def test_variants_group_the_seeds_of_one_configuration():
    """A lab model's variant is its method plus what its entry sets beyond the seed: the seed spread in
    `report --lab` is taken over the runs of one variant (a precision control is not a third seed)."""
    study = load_study(ROOT / "studies" / "cifar10-converged.toml")
    variant = {m.id: m.variant for m in study.models}
    assert variant["standard-s0"] == variant["standard-s1"] == "standard"
    assert variant["standard-s0-fp32"] == "standard precision=fp32"
    assert variant["pgd-linf-8-s0"] == variant["pgd-linf-8-s1"] == "pgd-linf eps=8/255 steps=2"
    assert variant["pgd-linf-2-s0"] == "pgd-linf eps=2/255"
    assert variant["standard-s0-e10"] is None  # a spec model: its variant is its run's, found by study accuracies
    third = {m.id: m for m in study.models}["akamaster-resnet20"]  # the model nobody here trained, beside them
    assert third.arch == f"{ROOT / 'tests' / 'fixtures' / 'akamaster_resnet.py'}:resnet20" and third.input_size == 32
    assert third.spec.endswith("shared/models/akamaster-resnet20/resnet20-12fca82f.th")


SHARED_STUDY = """
[study]
name = "shared"
data = "../data"
arch = "cifar_resnet50"
samples = 8
trials = 1
resets = ["random"]

[train]
epochs = 2
batch_size = 32

[[models]]
id = "standard"
method = "standard"
save_epochs = [1]

[[models]]
id = "standard-e1"
category = "trajectory"
spec = "file:runs/tiny/standard/epoch-1.safetensors"   # _study names every file tiny.toml

[[models]]
id = "untrained"
spec = "arch:cifar_resnet50"
num_classes = 3
"""


def test_a_run_another_process_trains_is_left_to_it(tiny_data_root, tmp_path):
    """Two `study run` processes share a study: a run folder another process holds (its lock) is skipped, and so
    is the trajectory checkpoint of that run (its run has not finished); the rest is done; a rerun does the rest."""
    from layercrit.errors import BusyError
    from layercrit.paths import LOCK_FILE, exclusive_lock

    path = _study(tmp_path, SHARED_STUDY, tiny_data_root)
    db = tmp_path / "shared.db"
    run_folder = tmp_path / "studies" / "runs" / "tiny" / "standard"
    run_folder.mkdir(parents=True)
    with exclusive_lock(run_folder, "run folder"):  # "another process" (flock: another open file conflicts)
        assert (run_folder / LOCK_FILE).read_text().startswith("pid ")
        with pytest.raises(BusyError, match="run folder .* is in use by pid"):
            exclusive_lock(run_folder, "run folder").__enter__()
        (run_folder / "epoch-1.safetensors").write_bytes(b"half-written")  # the holder is still writing it
        summary = run_study(path, db, progress=False)
        assert [(s["id"], s.get("trained"), s["measured"]) for s in summary] == [
            ("standard", "busy", "left to the process training it"), ("standard-e1", None, "waits for standard"),
            ("untrained", None, "now")]
        assert {p.name for p in run_folder.iterdir()} == {LOCK_FILE, "epoch-1.safetensors"}  # nothing written
        assert training_table(path).set_index("model_id").loc["standard", "status"] == "training"
    assert not (run_folder / LOCK_FILE).exists()  # removed by its holder
    assert training_table(path).set_index("model_id").loc["standard", "status"] == "not trained"
    (run_folder / "epoch-1.safetensors").unlink()
    summary = run_study(path, db, progress=False)
    assert [(s["id"], s.get("trained"), s["measured"]) for s in summary] == [
        ("standard", "now", "now"), ("standard-e1", None, "now"), ("untrained", None, "done")]
    assert {p.name for p in run_folder.iterdir()} == {"init.safetensors", "model.safetensors", "run.json",
                                                      "epoch-1.safetensors"}
    with ResultStore(db) as store:
        assert sorted(store.runs()["model_id"]) == ["standard", "standard-e1", "untrained"]


def test_a_killed_trainer_leaves_its_run_to_the_next(tiny_data_root, tmp_path):
    """The lock dies with its process (SIGKILL included): the next run takes the folder over at once."""
    import signal
    import subprocess
    import sys
    import time

    from layercrit.train import train

    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from layercrit.paths import exclusive_lock\n"
                               f"with exclusive_lock({str(out)!r}, 'run folder'):\n"
                               "    print('locked', flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(LayercritError, match="in use by pid"):
            train("standard", tiny_data_root, out, progress=False, epochs=1, batch_size=32)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    time.sleep(0.1)
    sidecar = train("standard", tiny_data_root, out, progress=False, epochs=1, batch_size=32)
    assert sidecar["epochs"] == 1 and not (out / ".lock").exists()


def test_bad_training_input_leaves_no_folder(tmp_path):
    from layercrit.train import train

    out = tmp_path / "a" / "b" / "run"
    with pytest.raises(LayercritError):
        train("standard", tmp_path / "no-data", out, progress=False, epochs=1)
    assert not (tmp_path / "a").exists()


def test_threads_apply_to_measuring_too(tiny_data_root, tmp_path, monkeypatch):
    """`study run --threads 1` measures on one thread as it trains on one (two processes on two cores would
    otherwise each measure with torch's default of one thread per core, oversubscribing them), then restores."""
    import torch

    import layercrit.study.run as study_run

    seen, measure = [], study_run.measure

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return measure(*args, **kwargs)

    monkeypatch.setattr(study_run, "measure", recording)
    path = _study(tmp_path, SHARED_STUDY, tiny_data_root)
    torch.set_num_threads(2)
    run_study(path, tmp_path / "t.db", only=["untrained"], threads=1, progress=False)
    assert seen == [1] and torch.get_num_threads() == 2


def test_metadata_is_written_per_model(tiny_data_root, tmp_path, monkeypatch):
    """A study process killed half-way (here: the second model fails) keeps the metadata of what it measured."""
    import layercrit.study.run as study_run

    calls, measure = [], study_run.measure

    def failing_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return measure(*args, **kwargs)

    monkeypatch.setattr(study_run, "measure", failing_second)
    path = _study(tmp_path, TINY_STUDY.replace('method = "standard"', 'spec = "arch:cifar_resnet50"\nnum_classes = 3')
                  .replace('method = "frozen-random"', 'spec = "arch:cifar_resnet50"\nnum_classes = 3'), tiny_data_root)
    with pytest.raises(KeyboardInterrupt):
        run_study(path, tmp_path / "m.db", progress=False)
    with open(tmp_path / "m.metadata.csv") as f:
        assert [r["model_id"] for r in csv.DictReader(f)] == ["standard"]


def test_metadata_accuracy_is_written_without_float_noise(tmp_path):
    from layercrit.study.run import write_metadata

    summary = [{"id": "a", "base_top1_acc": 1612 / 2000 * 100}, {"id": "b", "clean_test_acc": 87.36}]
    assert repr(summary[0]["base_top1_acc"]) == "80.60000000000001"  # what 100 * correct / n gives
    path = write_metadata(None, summary, tmp_path / "s.db")  # type: ignore[arg-type]
    with open(path) as f:
        assert [r["accuracy"] for r in csv.DictReader(f)] == ["80.6", "87.36"]
