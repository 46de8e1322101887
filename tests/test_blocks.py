"""Residual blocks as units (--unit block): discovery, removal = shortcut only, cached == naive, storage."""
import copy
import json
import sqlite3

import numpy as np
import pytest
import timm
import torch
import torchvision

import layercrit as lc
from layercrit.models import RemovedBlock, remove_blocks
from layercrit.resets import discover_blocks, layer_reset, parse_reset
from layercrit.store import METRICS

from conftest import run_cli

COMPARED = [m for m in METRICS if m != "criticality_ci"]


def _data(n, size, classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return lc.EvalData.from_tensors(images, torch.arange(n) % classes, [str(i) for i in range(classes)])


def _vit():
    return timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=10)


def _trained_like(net, seed=0):
    """Give every norm layer non-trivial scales/statistics so that removals visibly matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return net.eval()


def test_discovery_finds_the_blocks_in_forward_order():
    cifar = lc.create_model("arch:cifar_resnet50").network
    blocks = discover_blocks(cifar, 32)
    assert [b.name for b in blocks][:4] == ["layer1.0", "layer1.1", "layer1.2", "layer2.0"]
    assert len(blocks) == 3 + 4 + 6 + 3 and {b.module_type for b in blocks} == {"Bottleneck"}
    # a block resets its residual branch; the shortcut (downsample) is not part of it
    first = blocks[0]
    assert "conv1.weight" in first.params and not any(p.startswith("downsample.") for p in first.params)
    assert first.remove == ("bn3.weight", "bn3.bias")
    assert len(discover_blocks(torchvision.models.resnet18(num_classes=10), 32)) == 8
    vit = discover_blocks(_vit(), 32)
    assert [b.name for b in vit] == [f"blocks.{i}" for i in range(12)]
    assert vit[0].remove == ("attn.proj.weight", "attn.proj.bias", "mlp.fc2.weight", "mlp.fc2.bias")
    assert [b.name for b in discover_blocks(cifar, 32, patterns=["layer4.*"])] == ["layer4.0", "layer4.1", "layer4.2"]


def _explicit_shortcut(block, x):
    """What a block without its residual branch computes, written out by hand per block type."""
    from timm.models import resnet as timm_resnet

    if isinstance(block, torchvision.models.resnet.Bottleneck | torchvision.models.resnet.BasicBlock
                  | timm_resnet.Bottleneck | timm_resnet.BasicBlock):
        return torch.relu(block.downsample(x) if block.downsample is not None else x)
    return x  # a pre-norm transformer block: x + 0 + 0


@pytest.mark.parametrize("case", ["cifar_resnet50", "resnet18", "timm_resnet26", "timm_resnet18", "vit"])
def test_removing_a_block_equals_the_explicit_shortcut_computation(case):
    torch.manual_seed(0)
    if case == "cifar_resnet50":
        net, size, names = _trained_like(lc.create_model("arch:cifar_resnet50").network), 32, ["layer2.0", "layer3.3"]
    elif case == "resnet18":
        net, size, names = _trained_like(torchvision.models.resnet18(num_classes=10)), 64, ["layer2.0", "layer4.1"]
    elif case.startswith("timm_"):  # timm's Bottleneck (act3) and BasicBlock (act2)
        net = _trained_like(timm.create_model(case[5:], num_classes=10))
        size, names = 64, ["layer1.0", "layer2.0", "layer3.1"]
    else:
        net, size, names = _vit().eval(), 32, ["blocks.0", "blocks.7"]
    x = torch.rand(3, 3, size, size)
    for name in names:
        with torch.no_grad():
            # hand-written: run the network with the block's forward replaced by the explicit shortcut
            block = net.get_submodule(name)
            handle = block.register_forward_hook(lambda m, inp, out: _explicit_shortcut(m, inp[0]))
            expected = net(x)
            handle.remove()
            full = net(x)
            structural = remove_blocks(copy.deepcopy(net), [name])
            assert isinstance(structural.get_submodule(name), RemovedBlock)
            unit = next(b for b in discover_blocks(net, size) if b.name == name)
            with layer_reset(net, name, parse_reset("remove").values(net, unit, 0)):  # what --reset remove measures
                in_place = net(x)
        assert torch.equal(structural(x), expected)
        assert torch.equal(in_place, expected)
        assert not torch.allclose(full, expected)  # the block did matter
        torch.testing.assert_close(net(x), full, rtol=0, atol=0)  # restored


@pytest.mark.parametrize("case", ["cifar_resnet50", "vit"])
def test_block_units_cached_equals_naive(case):
    if case == "cifar_resnet50":
        bundle = lc.create_model("arch:cifar_resnet50")
        _trained_like(bundle.network)
        model, module_kw, data, n = bundle, {}, _data(10, 32, 10), 16  # a bundle knows its normalization
    else:
        torch.manual_seed(1)
        model, module_kw, data, n = _vit(), {"factory": _vit, "normalize": None}, _data(3, 32, 10), 12
    out = {e: lc.measure(model, data, **module_kw, unit="block", reset=["random", "remove"],
                         trials=2, samples=None, engine=e, batch_size=4, progress=False) for e in ("naive", "cached")}
    a, b = (out[e].set_index(["layer", "reset", "trial"]).sort_index() for e in ("naive", "cached"))
    assert len(a) == n * 2 + n and list(a.index) == list(b.index)  # remove is deterministic: one trial
    assert set(out["cached"]["unit"]) == {"block"}
    for m in COMPARED:
        np.testing.assert_allclose(b[m].to_numpy(), a[m].to_numpy(), rtol=0, atol=1e-5, err_msg=m)
    assert (a["criticality"] > 0).any()


def test_blocks_and_layers_share_a_database_and_are_kept_apart(tmp_path):
    db = tmp_path / "s.db"
    data = _data(8, 32, 10)
    bundle = lc.create_model("arch:cifar_resnet50")
    lc.measure(bundle, data, reset="random", trials=1, samples=None, store=db, progress=False)
    lc.measure(bundle, data, unit="block", reset=["random", "remove"], trials=1, samples=None, store=db,
               progress=False)
    with lc.ResultStore(db) as store:
        assert len(store.results(unit="layer")) == 54 and len(store.results(unit="block")) == 32
    out = tmp_path / "blocks.csv"
    assert run_cli("export", "--db", str(db), "--out", str(out), "--layout", "paper", "--unit", "block").returncode == 0
    paper = out.read_text().splitlines()
    assert len(paper) == 1 + 16 and "model.layer1.0," in paper[1]
    assert run_cli("export", "--db", str(db), "--out", str(out), "--layout", "paper").returncode == 0
    assert len(out.read_text().splitlines()) == 1 + 54  # the paper layout keeps to layers by default
    report = tmp_path / "report"
    proc = run_cli("report", "--db", str(db), "--unit", "block", "--out", str(report))
    assert proc.returncode == 0, proc.stderr
    assert "x 16 layers" in proc.stdout and (report / "heatmap.png").is_file()


def test_a_database_from_before_block_units_gains_the_unit_column(tmp_path):
    db = tmp_path / "old.db"
    lc.measure(lc.create_model("arch:cifar_resnet50"), _data(4, 32, 10), layers=["fc"], trials=1, samples=None,
               store=db, progress=False)
    con = sqlite3.connect(db)  # rebuild results as the old schema had it: without `unit`, timing called `seconds`
    cols = [r[1] if r[1] != "elapsed_seconds" else "elapsed_seconds AS seconds"
            for r in con.execute("PRAGMA table_info(results)") if r[1] != "unit"]
    with con:
        con.execute(f"CREATE TABLE old AS SELECT {', '.join(cols)} FROM results")
        con.execute("DROP TABLE results")
        con.execute("ALTER TABLE old RENAME TO results")
    con.close()
    with lc.ResultStore(db, create=False) as store:  # read as it is: the timing column under its present name
        assert store.results()["elapsed_seconds"].iloc[0] > 0
    with lc.ResultStore(db) as store:
        table = store.results()
    assert list(table["unit"]) == ["layer"] and table["layer"].iloc[0] == "fc"
    assert "elapsed_seconds" in [r[1] for r in sqlite3.connect(db).execute("PRAGMA table_info(results)")]


def test_bad_block_inputs_are_one_line(tmp_path):
    data = tmp_path / "d"
    for c in range(2):
        (data / f"c{c}").mkdir(parents=True)
        from PIL import Image

        Image.new("RGB", (32, 32), (c * 100, 0, 0)).save(data / f"c{c}" / "x.png")
    base = ["measure", "--model", "arch:cifar_resnet50", "--data", str(data), "--num-classes", "2",
            "--db", str(tmp_path / "x.db"), "--no-progress", "--samples", "2"]
    for args, words in [(["--reset", "remove"], "--unit block"),
                        (["--unit", "block", "--layers", "layer9.*"], "matches no layer"),
                        (["--unit", "block", "--reset", "remove", "--model", "arch:mobilenetv3_small_050",
                          "--input-size", "32"], "no residual block")]:
        proc = run_cli(*base, *args)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("layercrit: error:") and words in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
    with lc.ResultStore(tmp_path / "x.db") as store:
        assert store.results().empty


def test_unit_recorded_in_the_run_config(tmp_path):
    db = tmp_path / "s.db"
    lc.measure(lc.create_model("arch:cifar_resnet50"), _data(4, 32, 10), unit="block", layers=["layer4.2"],
               reset="remove", samples=None, store=db, progress=False)
    with lc.ResultStore(db) as store:
        config = json.loads(store.runs()["config"].iloc[0])
    assert config["unit"] == "block" and config["resets"] == ["remove"]
