"""layercrit compress: greedy criticality-guided block removal, baselines, saved variants, fine-tuning, errors."""
from __future__ import annotations

import json

import pytest
import torch

import layercrit as lc
from conftest import run_cli
from layercrit.compress import (compress, flops, parameter_count, select_greedy, select_magnitude, select_random,
                                throughput, without_blocks)
from layercrit.data import load_data
from test_train import make_image_folder, one_thread  # noqa: F401  (its autouse fixture applies here too)


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("tiny_cifar"), {"train": 16, "test": 6})


def _bundle(folder, num_classes=3):
    """A cifar_resnet50 with varied norm scales, calibrated on ``folder``'s images, so that its
    predictions are confident but not saturated and its blocks differ clearly in criticality."""
    bundle = lc.create_model("arch:cifar_resnet50", num_classes=num_classes)
    x = load_data(folder, input_size=32, progress=False).images.float().div(255)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in bundle.network.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(0.2 + 2 * torch.rand(m.weight.shape, generator=g))
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration pass below
        # an untrained net's default norm statistics let activations explode with depth: calibrate them
        bundle.model.train()(x)
        bundle.model.eval()
        bundle.network.fc.weight.div_(bundle.model(x).std() / 2)
        bundle.network.fc.bias.zero_()
    return bundle


def _save(bundle, path):
    """As the training lab saves weights: architecture and class count recorded in the file."""
    from layercrit.models.checkpoint import ARCH_METADATA, CLASSES_METADATA

    lc.models.save_safetensors(bundle.network, path, metadata={ARCH_METADATA: bundle.arch,
                                                               CLASSES_METADATA: str(bundle.num_classes)})
    return path


def test_greedy_remove_1_takes_the_block_of_lowest_measured_criticality(tiny_cifar, tmp_path):
    bundle = _bundle(tiny_cifar / "train")
    ckpt = _save(bundle, tmp_path / "m.safetensors")
    measured = lc.measure(bundle, str(tiny_cifar / "train"), unit="block", reset="remove", samples=None,
                          progress=False)
    lowest = measured.sort_values(["criticality", "layer_index"]).iloc[0]
    assert measured["criticality"].nunique() > 1 and lowest["criticality"] < measured["criticality"].iloc[1:].max()
    out = tmp_path / "c1"
    proc = run_cli("compress", "--model", f"file:{ckpt}", "--arch", "cifar_resnet50", "--num-classes", "3",
                   "--data", str(tiny_cifar / "train"), "--samples", "all", "--remove", "1",
                   "--test-data", str(tiny_cifar / "test"), "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    info = json.loads((out / "compress.json").read_text())
    assert info["removed_blocks"] == [lowest["layer"]]
    assert info["steps"][0]["criticality"] == pytest.approx(lowest["criticality"], abs=1e-9)
    assert info["arch"] == f"cifar_resnet50:remove={lowest['layer']}"
    assert info["params"]["compressed"] < info["params"]["base"] and info["flops"]["compressed"] < info["flops"]["base"]
    assert set(info["test"]) == {"samples", "base_top1_acc", "top1_acc"} and info["test"]["samples"] == 18
    assert not (tmp_path / "c1.partial").exists()

    # the saved checkpoint is a model like any other: it loads without --arch and measures
    loaded = lc.create_model(f"file:{out / 'model.safetensors'}")
    assert loaded.arch == info["arch"] and loaded.num_classes == 3
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        expected = without_blocks(bundle, [lowest["layer"]]).model.to(memory_format=torch.contiguous_format)(x)
        torch.testing.assert_close(loaded.model(x), expected, rtol=0, atol=0)
    db = tmp_path / "s.db"
    for unit in ("layer", "block"):
        proc = run_cli("measure", "--model", f"file:{out / 'model.safetensors'}", "--data", str(tiny_cifar / "test"),
                       "--samples", "all", "--trials", "1", "--unit", unit, "--db", str(db), "--no-progress")
        assert proc.returncode == 0, proc.stderr
    with lc.ResultStore(db) as store:
        assert len(store.results(unit="layer")) == 54 - 3  # one bottleneck's three convs are gone
        assert len(store.results(unit="block")) == 15


def test_greedy_remeasures_after_each_removal_and_respects_max_drop(tiny_cifar):
    bundle = _bundle(tiny_cifar / "train")
    data = load_data(tiny_cifar / "train", input_size=32, progress=False)
    result = select_greedy(bundle, data, remove=3)
    assert list(result.steps["candidates"]) == [16, 15, 14] and len(set(result.removed)) == 3
    # step 2 is the lowest criticality measured on the network without the first block
    again = lc.measure(without_blocks(bundle, result.removed[:1]), data, unit="block", reset="remove",
                       samples=None, progress=False)
    assert result.removed[1] == again.sort_values(["criticality", "layer_index"]).iloc[0]["layer"]
    # --max-drop: allow exactly the first step's loss; greedy then stops before the first removal beyond it
    first_loss = result.base_top1_acc - result.steps["top1_acc"].iloc[0]
    capped = select_greedy(bundle, data, max_drop=first_loss + 1e-9)
    assert len(capped.steps) >= 1 and capped.removed[0] == result.removed[0]
    assert all(capped.base_top1_acc - acc <= first_loss + 1e-9 for acc in capped.steps["top1_acc"])
    nxt = lc.measure(without_blocks(bundle, capped.removed), data, unit="block", reset="remove", samples=None,
                     progress=False).sort_values(["criticality", "layer_index"]).iloc[0]
    assert capped.base_top1_acc - nxt["top1_acc"] > first_loss + 1e-9  # why it stopped


def test_baseline_rules(tiny_cifar):
    bundle = _bundle(tiny_cifar / "train")
    with torch.no_grad():  # make two blocks' branch outputs tiny: the magnitude rule must pick exactly those
        for name in ("layer3.4", "layer1.1"):
            block = bundle.network.get_submodule(name)
            block.bn3.weight.mul_(1e-3)
            block.bn3.bias.mul_(1e-3)
    assert select_magnitude(bundle, 2) == ["layer1.1", "layer3.4"] or select_magnitude(bundle, 2) == ["layer3.4", "layer1.1"]
    draws = {seed: select_random(bundle, 4, seed) for seed in range(3)}
    assert select_random(bundle, 4, 0) == draws[0] and len(set(map(tuple, draws.values()))) > 1
    with pytest.raises(lc.LayercritError, match="between 1 and 15"):
        select_random(bundle, 16, 0)


def test_cost_measures(tiny_cifar):
    bundle = _bundle(tiny_cifar / "train")
    small = without_blocks(bundle, ["layer2.1", "layer4.2"])
    assert parameter_count(small.network) == sum(p.numel() for p in small.network.parameters())
    assert parameter_count(small.network) < parameter_count(bundle.network)
    assert 0 < flops(small.network, 32) < flops(bundle.network, 32)
    rates = throughput({"full": bundle.model, "small": small.model}, 32, batch_size=2, seconds=0.2, rounds=2)
    assert set(rates) == {"full", "small"} and all(r > 0 for r in rates.values())


def test_compress_with_finetuning_through_the_training_lab(tiny_cifar, tmp_path):
    bundle = _bundle(tiny_cifar / "train")
    out = tmp_path / "ft"
    info = compress(bundle, out, rule="random", remove=2, seed=1,
                    finetune={"data": tiny_cifar, "epochs": 1, "batch_size": 16, "lr": 0.01})
    run = json.loads((out / "finetuned" / "run.json").read_text())
    assert run["arch"] == info["arch"] and run["hyperparameters"]["init_from"] == str(out / "model.safetensors")
    assert info["finetuned"]["clean_test_acc"] == run["clean_test_acc"]
    tuned = lc.create_model(f"file:{out / 'finetuned' / 'model.safetensors'}")  # self-describing as well
    assert tuned.arch == info["arch"]
    start = lc.models.load_state_dict(out / "model.safetensors")
    end = lc.models.load_state_dict(out / "finetuned" / "model.safetensors")
    assert set(start) == set(end) and any(not torch.equal(start[k], end[k]) for k in start)


def test_compress_bad_inputs_are_one_line_and_write_nothing(tiny_cifar, tmp_path):
    ckpt = _save(_bundle(tiny_cifar / "train"), tmp_path / "m.safetensors")
    base = ["compress", "--model", f"file:{ckpt}", "--arch", "cifar_resnet50", "--num-classes", "3",
            "--data", str(tiny_cifar / "train"), "--samples", "all", "--no-progress"]
    (tmp_path / "taken").mkdir()
    cases = [([], "--remove N"), (["--remove", "16"], "between 1 and 15"),
             (["--remove", "1", "--rule", "magnitude", "--max-drop", "1"], "--max-drop"),
             (["--remove", "1", "--finetune-epochs", "1"], "--finetune-data"),
             (["--max-drop", "-1"], ">= 0")]
    for extra, words in cases:
        out = tmp_path / "o"
        proc = run_cli(*base, *extra, "--out", str(out))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and words in lines[0], proc.stderr
        assert not out.exists() and not (tmp_path / "o.partial").exists()
    proc = run_cli(*base, "--remove", "1", "--out", str(tmp_path / "taken"))
    assert proc.returncode == 2 and "exists already" in proc.stderr
    for extra, words in [(["--layers", "layer4.*"], "do not apply"), (["--remove", "0"], "between 1 and 15"),
                         (["--finetune-epochs", "1", "--finetune-data", str(tmp_path / "nope")], "no train/ folder"),
                         (["--finetune-epochs", "1", "--finetune-data", str(tiny_cifar), "--finetune-method", "sgdx"],
                          "sgdx")]:
        proc = run_cli(*base, "--remove", "1", *extra, "--out", str(tmp_path / "o"))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and words in lines[0], proc.stderr
        assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_saved_model_keeps_its_input_normalization_and_stale_partials_go(tiny_cifar, tmp_path):
    bundle = _bundle(tiny_cifar / "train")
    x = torch.rand(2, 3, 32, 32)
    for mean_std in [(None, None), ((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))]:
        bundle.model = lc.models.NormalizedModel(bundle.network, *mean_std).eval()
        out = tmp_path / f"n{mean_std[0] is None}"
        out.with_name(out.name + ".partial").mkdir()
        (out.with_name(out.name + ".partial") / "junk.txt").write_text("from an earlier run of another model")
        compress(bundle, out, rule="random", remove=1, seed=0)
        assert not (out / "junk.txt").exists() and not (out / "in-progress.json").exists()
        loaded = lc.create_model(f"file:{out / 'model.safetensors'}")
        assert loaded.model.normalize == (mean_std[0] is not None)
        with torch.no_grad():
            expected = without_blocks(bundle, json.loads((out / "compress.json").read_text())["removed_blocks"])
            torch.testing.assert_close(loaded.model(x), expected.model(x))
    with pytest.raises(lc.LayercritError, match="normalization"):  # fine-tuning would train with other inputs
        compress(bundle, tmp_path / "ft", rule="random", remove=1, finetune={"data": tiny_cifar, "epochs": 1})



def test_compress_compare_table_plot_and_resume(tiny_cifar, tmp_path):
    ckpt = _save(_bundle(tiny_cifar / "train"), tmp_path / "m.safetensors")
    out = tmp_path / "cmp"
    args = ["compress-compare", "--model", f"tiny={ckpt}".replace("=", "=file:", 1), "--arch", "cifar_resnet50",
            "--data", str(tiny_cifar), "--remove", "1", "--random-seeds", "2", "--selection-samples", "48",
            "--test-samples", "all", "--finetune-epochs", "1", "--finetune-samples", "16", "--speed-seconds", "0.1",
            "--out", str(out), "--no-progress"]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    import pandas as pd

    table = pd.read_csv(out / "compression.csv")
    assert sorted(zip(table["rule"], table["seed"])) == [("criticality", 0), ("magnitude", 0), ("random", 0),
                                                         ("random", 1)]
    assert table["finetuned_top1_acc"].notna().all() and (table["speedup_b64"] > 0).all()
    assert (table["params_ratio"] < 1).all() and (table["n_removed"] == 1).all()
    bundle = lc.create_model(f"file:{ckpt}")
    data = load_data(tiny_cifar / "train", input_size=32, samples=48, progress=False)
    greedy = select_greedy(bundle, data, remove=1).removed
    assert table.loc[table["rule"] == "criticality", "blocks"].item() == " ".join(greedy)
    assert table.loc[table["rule"] == "magnitude", "blocks"].item() == " ".join(select_magnitude(bundle, 1))
    md = (out / "compression.md").read_text()
    assert "| tiny | 1 | criticality |" in md and "random (x2)" in md
    assert (out / "accuracy_vs_speed.png").is_file() and not (out / "models").exists()
    before = (out / "compression.csv").read_text()
    assert run_cli(*args).returncode == 0 and (out / "compression.csv").read_text() == before  # all rows present
    proc = run_cli(*args, "--remeasure-speed")
    assert proc.returncode == 0 and "speed-ups of 4 variants" in proc.stdout, proc.stderr
    again = pd.read_csv(out / "compression.csv")
    pd.testing.assert_frame_equal(again.drop(columns=["speedup_b1", "speedup_b64"]),
                                  table.drop(columns=["speedup_b1", "speedup_b64"]))
    assert (again["speedup_b1"] > 0).all() and not again[["speedup_b1", "speedup_b64"]].equals(
        table[["speedup_b1", "speedup_b64"]])  # measured anew
    other = _bundle(tiny_cifar / "train")
    with torch.no_grad():
        other.network.fc.bias.add_(1.0)
    ckpt2 = _save(other, tmp_path / "m2.safetensors")
    proc = run_cli(*[a if a != f"tiny=file:{ckpt}" else f"tiny=file:{ckpt2}" for a in args])
    assert proc.returncode == 2 and "other weights" in proc.stderr  # no rows of another model under one id
    proc = run_cli(*[a if a != "16" else "8" for a in args])
    assert proc.returncode == 2 and "finetune" in proc.stderr  # nor rows of other fine-tuning settings
    bad = run_cli("compress-compare", "--model", "nospec", "--data", str(tiny_cifar), "--out", str(tmp_path / "b"))
    assert bad.returncode == 2 and "ID=SPEC" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
