"""accuracy_table: accuracy, robust accuracy and confidence per model of a study, trajectory checkpoints included."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from layercrit import LayercritError, create_model, load_data
from layercrit.study import load_study
from layercrit.study.accuracies import accuracy_table
from layercrit.train import train
from test_train import make_image_folder, one_thread  # noqa: F401  (its autouse fixture applies here too)

STUDY = """
[study]
name = "acc"
data = "../data"
seed = 0
samples = 9

[train]
epochs = 2
batch_size = 32

[[models]]
id = "standard"
category = "baseline"
method = "standard"
save_epochs = [1]

[[models]]
id = "standard-e1"
category = "trajectory"
spec = "file:runs/acc/standard/epoch-1.safetensors"

[[models]]
id = "pgd"
category = "adversarial training"
method = "pgd-linf"
eps = "8/255"
epochs = 1
robust_eval_samples = 6
robust_eval_steps = 2

[[models]]
id = "not-trained-yet"
category = "baseline"
method = "standard"
seed = 5

[[models]]
id = "untrained"
category = "control"
spec = "arch:cifar_resnet50"
num_classes = 3
"""


@pytest.fixture(scope="module")
def study_file(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("acc")
    make_image_folder(tmp / "data", {"train": 32, "test": 4})
    (tmp / "studies").mkdir()
    path = tmp / "studies" / "acc.toml"
    path.write_text(STUDY)
    study = load_study(path)
    for entry in study.models[:3]:
        if entry.method:
            train(entry.method, study.data, study.runs / entry.id, progress=False, **entry.hyperparameters)
    return path


def test_accuracy_table_rows_and_values(study_file):
    table = accuracy_table(study_file, progress=False).set_index("model_id")
    assert list(table.index) == ["standard", "standard-e1", "pgd", "untrained"]  # untrained lab model skipped
    study = load_study(study_file)
    run = study.runs / "standard"
    import json

    side = json.loads((run / "run.json").read_text())
    assert table.loc["standard", "epoch"] == 2 and table.loc["standard-e1", "epoch"] == 1
    assert table.loc["standard-e1", "final_epoch"] == 2 and table.loc["standard-e1", "method"] == "standard"
    assert table.loc["standard-e1", "variant"] == table.loc["standard", "variant"] == "standard"  # its run's
    assert table.loc["pgd", "variant"].startswith("pgd-linf eps=") and pd_isna(table.loc["untrained", "variant"])
    assert table.loc["standard-e1", "clean_test_acc"] == side["snapshots"][0]["clean_test_acc"]
    assert table.loc["standard", "clean_test_acc"] == side["clean_test_acc"]
    assert table.loc["standard-e1", "train_seconds"] <= table.loc["standard", "train_seconds"]
    assert pd_isna(table.loc["standard", "robust_test_acc"]) and table.loc["pgd", "robust_test_acc"] >= 0
    assert "PGD-2" in table.loc["pgd", "robust_eval"]
    assert (table["eval_images"] == 9).all() and (table.loc["untrained", "test_images"] == 12)
    # confidence and entropy computed independently on the same draw of images (a trained and an untrained model)
    data = load_data(study.data / "test", input_size=32, samples=9, seed=0, progress=False)
    for model_id, model in (("standard-e1", create_model(f"file:{run / 'epoch-1.safetensors'}")),
                            ("untrained", create_model("arch:cifar_resnet50", num_classes=3, init_seed=0))):
        with torch.no_grad():
            p = torch.softmax(model.model.eval()(data.images.float() / 255).double(), dim=1)
        assert table.loc[model_id, "mean_confidence"] == pytest.approx(p.max(1).values.mean().item(), abs=1e-5)
        entropy = -torch.xlogy(p, p).sum(1).mean().item()
        assert table.loc[model_id, "mean_entropy"] == pytest.approx(entropy, abs=1e-5)
    assert table.loc["untrained", "mean_entropy"] > 0.01
    assert ((table["mean_confidence"] >= 1 / 3 - 1e-9) & (table["mean_confidence"] <= 1)).all()


def test_accuracy_table_before_anything_exists(tmp_path):
    make_image_folder(tmp_path / "data", {"train": 4, "test": 1})
    (tmp_path / "studies").mkdir()
    path = tmp_path / "studies" / "acc.toml"
    path.write_text(STUDY.replace('spec = "arch:cifar_resnet50"', 'spec = "file:nothing.safetensors"'))
    running = tmp_path / "studies" / "runs" / "acc" / "standard"  # a run still training: a snapshot, no run.json
    running.mkdir(parents=True)
    (running / "epoch-1.safetensors").write_bytes(b"written by a run that has not finished")
    with pytest.raises(LayercritError, match="no trained or given model"):
        accuracy_table(path, progress=False)


def pd_isna(value) -> bool:
    return value != value or value is None


def test_cli_study_accuracies_writes_the_table(study_file, tmp_path):
    import pandas as pd

    from conftest import run_cli

    out = tmp_path / "acc.csv"
    proc = run_cli("study", "accuracies", str(study_file), "--out", str(out), "--only", "standard", "standard-e1",
                   "--no-progress", check=True)
    table = pd.read_csv(out)
    assert list(table["model_id"]) == ["standard", "standard-e1"] and list(table["epoch"]) == [2, 1]
    assert "2 models -> " in proc.stdout


def test_a_given_model_with_its_own_architecture_and_normalization(tmp_path):
    """A study's spec model is built as `study run` builds it (its arch file, input size, mean/std): the
    third-party ResNet-20 on the CIFAR-10 JPEG copy, far above chance."""
    from conftest import ROOT, SHARED_DATA, need

    data = need(SHARED_DATA / "cifar10")
    weights = SHARED_DATA.parent / "models" / "akamaster-resnet20" / "resnet20-12fca82f.th"
    if not weights.is_file():
        pytest.skip(f"{weights} is absent (the shared models lie beside the project in ../shared/models)")
    path = tmp_path / "third.toml"
    path.write_text(f"""
[study]
data = "{data}"
samples = 200
[[models]]
id = "akamaster"
category = "third party"
spec = "file:{weights}"
arch = "{ROOT / 'tests' / 'fixtures' / 'akamaster_resnet.py'}:resnet20"
input_size = 32
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
""")
    table = accuracy_table(path, progress=False).set_index("model_id")
    assert table.loc["akamaster", "test_images"] == 10000 and table.loc["akamaster", "eval_images"] == 200
    assert table.loc["akamaster", "clean_test_acc"] >= 78.0  # 91.7 % on lossless CIFAR-10; JPEG costs ~10 points


def test_network_epochs_leave_a_contrastive_runs_probe_out():
    """SimCLR's snapshots count contrastive epochs, so its final model must too (the lab's sidecars as written)."""
    import json

    from layercrit.study.accuracies import network_epochs

    runs = Path(__file__).resolve().parents[1] / "studies" / "runs" / "cifar10-methods"
    sidecars = {m: json.loads((runs / m / "run.json").read_text()) for m in ("simclr", "standard", "frozen-random")}
    assert sidecars["simclr"]["epochs"] == 13 and network_epochs(sidecars["simclr"]) == 3  # 3 contrastive + 10 probe
    assert network_epochs(sidecars["standard"]) == 3
    assert network_epochs(sidecars["frozen-random"]) == 10  # a probe alone: its epochs are the run's
