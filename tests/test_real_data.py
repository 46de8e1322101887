"""Real data from ../shared/data: CIFAR-10 test images, one ImageNet val image per class."""
import pandas as pd
import torch
import torchvision

import layercrit as lc
from conftest import CIFAR_TEST, IMAGENET_VAL, need, run_cli
from layercrit.store import PAPER_COLUMNS


def _torchvision_resnet50_layers():
    net = torchvision.models.resnet50()
    return [n for n, m in net.named_modules() if type(m).__name__ in ("Conv2d", "Linear")]


def test_cifar_subset_through_cli_and_paper_export(tmp_path):
    data = need(CIFAR_TEST)
    db = tmp_path / "cifar.db"
    proc = run_cli("measure", "--model", "arch:cifar_resnet50", "--data", str(data), "--samples", "64",
                   "--trials", "2", "--layers", "conv1", "layer3.0.*", "fc", "--db", str(db), "--no-progress",
                   "--category", "random-init")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "paper.csv"
    assert run_cli("export", "--db", str(db), "--out", str(out), "--layout", "paper").returncode == 0
    paper = pd.read_csv(out)
    assert list(paper.columns) == PAPER_COLUMNS
    assert len(paper) == 6 * 2
    assert set(paper.layer) == {"model.conv1", "model.layer3.0.conv1", "model.layer3.0.conv2", "model.layer3.0.conv3",
                                "model.layer3.0.downsample.0", "model.fc"}
    assert sorted(paper.trial.unique()) == [0.0, 1.0]
    assert paper.batch_acc.isna().all() and (paper.model_id == "cifar_resnet50").all()
    assert paper.top1_acc.between(0, 100).all() and paper.pred_cos_sim.between(0, 1).all()
    tidy_out = tmp_path / "tidy.parquet"
    assert run_cli("export", "--db", str(db), "--out", str(tidy_out)).returncode == 0
    tidy = pd.read_parquet(tidy_out)
    assert len(tidy) == 12 and (tidy.category == "random-init").all()
    assert (tidy.criticality == 100 * (1 - tidy.pred_cos_sim)).all()
    assert (tidy.n_samples == 64).all()


def test_untrained_timm_resnet50_on_imagenet_sample_has_the_studys_54_layers(tmp_path):
    data_dir = need(IMAGENET_VAL)
    bundle = lc.create_model("arch:resnet50")  # timm's resnet50, freshly initialized
    assert bundle.num_classes == 1000 and bundle.input_size == 224
    layers = lc.discover_layers(bundle.network, 224)
    assert [layer.name for layer in layers] == _torchvision_resnet50_layers()
    assert len(layers) == 54
    assert sum(layer.module_type == "Conv2d" for layer in layers) == 53
    data = lc.load_data(data_dir, input_size=224, samples=16, seed=0, progress=False)
    assert data.images.shape == (16, 3, 224, 224) and data.num_classes == 1000
    df = lc.measure(bundle, data, layers=["conv1", "fc"], trials=1, samples=16, progress=False, batch_size=8)
    assert df.layer.tolist() == ["conv1", "fc"]
    assert df.criticality.between(0, 100).all()


def test_study_transform_and_sample_draw(tmp_path):
    data_dir = need(IMAGENET_VAL)
    a = lc.load_data(data_dir, input_size=224, samples=8, seed=1, progress=False)
    b = lc.load_data(data_dir, input_size=224, samples=8, seed=1, progress=False)
    c = lc.load_data(data_dir, input_size=224, samples=8, seed=2, progress=False)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert "resize=256|crop=224" in a.source
    # one image per class in sorted class folders: label == file index, so the labels are the draw itself,
    # in its shuffled order (prefixes are random subsamples)
    from layercrit.data.datasets import draw_indices

    assert a.labels.tolist() == draw_indices(1000, 8, 1)
    assert a.labels.tolist() != sorted(a.labels.tolist())


def test_decoded_images_are_cached_across_runs(tmp_path):
    data_dir = need(IMAGENET_VAL)
    from layercrit.paths import cache_dir

    first = lc.load_data(data_dir, input_size=224, samples=4, seed=0, progress=False)
    files = list(cache_dir("data").glob("*.safetensors"))
    assert len(files) == 1
    again = lc.load_data(data_dir, input_size=224, samples=4, seed=0, progress=False)
    fresh = lc.load_data(data_dir, input_size=224, samples=4, seed=0, progress=False, cache=False)
    assert again.fingerprint == first.fingerprint == fresh.fingerprint
    assert (again.images == fresh.images).all() and (again.labels == fresh.labels).all()
    assert again.classes == fresh.classes
    lc.load_data(data_dir, input_size=160, samples=4, seed=0, progress=False)  # another transform: another entry
    assert len(list(cache_dir("data").glob("*.safetensors"))) == 2


def test_vit_tiny_layer_discovery_is_generic():
    bundle = lc.create_model("arch:vit_tiny_patch16_224")
    names = [layer.name for layer in lc.discover_layers(bundle.network, 224)]
    assert names[0] == "patch_embed.proj" and names[-1] == "head"
    assert names[1:5] == ["blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.mlp.fc1", "blocks.0.mlp.fc2"]
    assert len(names) == 1 + 12 * 4 + 1
    norms = lc.discover_layers(bundle.network, 224, types=("norm",))
    assert norms[0].name == "blocks.0.norm1" and norms[-1].name == "norm"


def test_vit_tiny_measures_on_imagenet_sample():
    data_dir = need(IMAGENET_VAL)
    bundle = lc.create_model("arch:vit_tiny_patch16_224")
    df = lc.measure(bundle, str(data_dir), layers=["blocks.11.mlp.fc2", "head"], trials=1, samples=8,
                    progress=False)
    assert len(df) == 2 and df.criticality.between(0, 100).all()
    assert (df.criticality > 0).all()


def test_cifar10_in_torchvision_format(tmp_path, monkeypatch):
    """A folder holding cifar-10-batches-py (torchvision's download format) loads at 32x32, with its classes."""
    import pickle

    import numpy as np
    from torchvision.datasets import CIFAR10

    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names}, f)
    test = rng.integers(0, 256, (20, 3072), dtype=np.uint8)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": test, "labels": list(range(10)) * 2}, f)
    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}, f)
    # our files are not the real ones: skip torchvision's md5 checks of the download
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    from layercrit.data.datasets import draw_indices

    order = draw_indices(20, None, 0)
    expected = torch.from_numpy(test.reshape(20, 3, 32, 32))[order]
    for root in (folder.parent, folder):
        data = lc.load_data(root, input_size=32, samples=None, seed=0, progress=False)
        assert data.classes == names and data.images.shape == (20, 3, 32, 32)
        assert torch.equal(data.images, expected)  # no resize or crop at 32 px: the stored pixels themselves
        assert data.labels.tolist() == [(list(range(10)) * 2)[i] for i in order]
    train = lc.load_data(folder.parent, input_size=32, samples=None, seed=0, split="train", progress=False)
    assert len(train) == 20
