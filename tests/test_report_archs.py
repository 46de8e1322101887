"""Reports for any architecture: each model's layers in its own forward order, architectures never
interleaved, the classifier is the head whatever its name, a one-model report without empty comparisons."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn as nn

import layercrit as lc
from conftest import run_cli
from layercrit.analysis import ReportWarning, load_results
from layercrit.analysis.layers import architecture_groups, assign_stages, layer_order


class Block(nn.Module):
    def __init__(self, c: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x + torch.relu(self.conv1(x))


class Deep(nn.Module):
    """conv1, layer1.{0,1,2}.conv1, layer2.{0,1,2}.conv1, linear: a CIFAR-ResNet-like layout with a `linear` head."""

    def __init__(self, depth: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.layer1 = nn.Sequential(*[Block() for _ in range(depth)])
        self.layer2 = nn.Sequential(*[Block() for _ in range(depth)])
        self.linear = nn.Linear(8, 4)

    def forward(self, x):
        return self.linear(self.layer2(self.layer1(torch.relu(self.conv1(x)))).mean((2, 3)))


class Shallow(Deep):
    def __init__(self):
        super().__init__(depth=1)


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=g)
    return lc.EvalData.from_tensors(images, torch.randint(0, 4, (16,), generator=g), list("abcd"))


def _measure(net_cls, model_id, data, db, seed=0, **kw):
    torch.manual_seed(seed)
    bundle = lc.ModelBundle.from_module(net_cls(**kw), lambda: net_cls(**kw), normalize=None, model_id=model_id)
    lc.measure(bundle, data, store=db, trials=2, progress=False)


DEEP = ["conv1", "layer1.0.conv1", "layer1.1.conv1", "layer1.2.conv1", "layer2.0.conv1", "layer2.1.conv1",
        "layer2.2.conv1", "linear"]
SHALLOW = ["conv1", "layer1.0.conv1", "layer2.0.conv1", "linear"]


def test_two_architectures_keep_their_own_order_and_panels(data, tmp_path):
    db = tmp_path / "two.db"
    _measure(Shallow, "shallow", data, db)
    _measure(Deep, "deep_a", data, db, seed=1)
    _measure(Deep, "deep_b", data, db, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReportWarning)
        res = load_results([db], baseline="deep_a")
    assert res.archs == ["Deep", "Shallow"]  # groups in display order (the baseline's first), by recorded class name
    assert dict(zip(res.models["model_id"], res.models["arch"])) == {"deep_a": "Deep", "deep_b": "Deep",
                                                                     "shallow": "Shallow"}
    for arch, names in (("Deep", DEEP), ("Shallow", SHALLOW)):
        layers = res.layers[res.layers["arch"] == arch]
        assert list(layers["layer"]) == names  # its own forward order, not interleaved with the other's
        assert list(layers["stage"]) == ["stem"] + [f"stage {n[5]}" for n in names[1:-1]] + ["head"]
        assert layers["label"].iloc[-1] == "[head] linear"
    # the matrix keeps groups apart: a model has values only in its own group's columns
    m = res.matrix()
    assert m.loc["shallow", [c for c in m.columns if c.startswith("Deep")]].isna().all()
    assert m.loc["deep_a", [c for c in m.columns if c.startswith("Deep")]].notna().all()
    assert not res.delta().loc["deep_b"].isna().all() and res.delta().loc["shallow"].isna().all()
    assert set(res.stage_stats.columns) >= {"stem", "stage 1", "stage 2", "head"} and "other" not in res.stage_stats
    out = tmp_path / "report"
    run_cli("report", "--db", str(db), "--baseline", "deep_a", "--out", str(out), check=True)
    s = json.loads((out / "summary.json").read_text())
    assert s["architectures"] == {"Deep": DEEP, "Shallow": SHALLOW}
    assert s["models"]["shallow"]["arch"] == "Shallow" and s["models"]["deep_b"]["stages"]["head"] is not None
    assert (out / "heatmap.png").stat().st_size > 0 and (out / "delta.png").stat().st_size > 0
    assert not (out / "criticality_by_layer.png").exists()


def test_one_model_report_shows_a_layer_bar_chart_and_no_empty_comparisons(data, tmp_path):
    db = tmp_path / "one.db"
    _measure(Deep, "only", data, db)
    out = tmp_path / "report"
    proc = run_cli("report", "--db", str(db), "--out", str(out), check=True)
    files = sorted(p.name for p in out.iterdir())
    assert "criticality_by_layer.png" in files and "criticality_by_layer.pdf" in files
    for absent in ("delta.png", "accuracy_vs_criticality.png", "epsilon.png"):
        assert absent not in files, absent
    assert "Traceback" not in proc.stderr


def test_same_class_at_two_depths_aligns_with_gaps_in_one_forward_order():
    rows = {"a": SHALLOW, "b": DEEP}
    import pandas as pd

    frame = pd.DataFrame([{"model_id": m, "layer": n, "layer_index": i} for m, names in rows.items()
                          for i, n in enumerate(names)])
    assert layer_order(frame) == DEEP  # merged forward orders, not sorted by the per-run index
    assert architecture_groups(frame, {"a": "Net", "b": "Net"}) == {"a": "Net", "b": "Net"}
    assert set(architecture_groups(frame, {"a": "resnet20", "b": "resnet56"}).values()) == {"resnet20", "resnet56"}
    assert set(architecture_groups(frame).values()) == {"architecture 1"}  # a subset of layers: one network


def test_head_and_stem_whatever_their_names():
    assert assign_stages(["conv1", "layer1.0.conv1", "linear"], ["Conv2d", "Conv2d", "Linear"]) == \
        ["stem", "stage 1", "head"]
    assert assign_stages(["patch_embed.proj", "blocks.0.attn.qkv", "head"], ["Conv2d", "Linear", "Linear"]) == \
        ["stem", "other", "head"]
    assert assign_stages(["features.0", "classifier.1", "classifier.4"], ["Conv2d", "Linear", "Linear"]) == \
        ["stem", "other", "head"]
    assert assign_stages(["conv1", "layer1.0.conv1", "fc"]) == ["stem", "stage 1", "head"]  # the study's CSV
    assert assign_stages(["conv1", "layer4.2.conv3"]) == ["stem", "stage 4"]  # no classifier measured


def test_disagreement_metric_reports_100_minus_top1_agreement(data, tmp_path):
    db = tmp_path / "m.db"
    _measure(Deep, "a", data, db)
    _measure(Deep, "b", data, db, seed=1)
    out = tmp_path / "report"
    run_cli("report", "--db", str(db), "--metric", "disagreement", "--out", str(out), check=True)
    s = json.loads((out / "summary.json").read_text())
    tidy = lc.ResultStore(db, create=False).results()
    for model in ("a", "b"):
        rows = tidy[(tidy["model_id"] == model) & (tidy["reset"] == "random")]
        per_layer = (100 - rows["pred_agreement"]).groupby(rows["layer"]).mean()
        assert s["models"][model]["avg_criticality"] == pytest.approx(per_layer.mean())
    assert s["metric"] == "disagreement" and "top-1 disagreement" in (out / "index.html").read_text()
    bad = run_cli("report", "--db", str(db), "--metric", "entropy", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and not (tmp_path / "x").exists()


def test_a_third_party_resnet20_and_cifar_resnet50_in_one_report(tmp_path):
    """The real akamaster ResNet-20 (architecture from tests/fixtures) beside cifar_resnet50: each keeps its own
    layer order, `linear` is the head, and the two are separate panels."""
    from conftest import CIFAR_TEST, ROOT, need

    need(CIFAR_TEST)
    ckpt = ROOT.parent / "shared" / "models" / "akamaster-resnet20" / "resnet20-12fca82f.th"
    if not ckpt.is_file():
        pytest.skip(f"{ckpt} is absent (the shared models lie beside the project in ../shared/models)")
    db = tmp_path / "two.db"
    common = ["--data", str(CIFAR_TEST), "--samples", "100", "--trials", "1", "--db", str(db), "--no-progress"]
    run_cli("measure", "--model", f"file:{ckpt}", "--arch", f"{ROOT / 'tests/fixtures/akamaster_resnet.py'}:resnet20",
            "--input-size", "32", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225", "--name", "resnet20",
            "--layers", "conv1", "layer1.0.*", "layer3.2.*", "linear", *common, check=True)
    run_cli("measure", "--model", "arch:cifar_resnet50", "--layers", "conv1", "layer1.0.*", "layer4.2.conv3", "fc",
            *common, check=True)
    out = tmp_path / "report"
    run_cli("report", "--db", str(db), "--out", str(out), check=True)
    s = json.loads((out / "summary.json").read_text())
    assert s["architectures"] == {
        "akamaster_resnet.py:resnet20": ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer3.2.conv1",
                                         "layer3.2.conv2", "linear"],
        "cifar_resnet50": ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.0.conv3", "layer1.0.downsample.0",
                           "layer4.2.conv3", "fc"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReportWarning)
        res = load_results([db])
    stages = res.layers.set_index(["arch", "layer"])["stage"]
    assert stages[("akamaster_resnet.py:resnet20", "linear")] == "head"
    assert stages[("akamaster_resnet.py:resnet20", "layer3.2.conv2")] == "stage 3"
    assert stages[("cifar_resnet50", "fc")] == "head" and stages[("cifar_resnet50", "conv1")] == "stem"
