"""output= (issue 23, part 3): what a measurement compares: the softmax (the study), raw logits, any module's
output (a headless backbone's pooled features) or a callable; class metrics are empty (NaN) for features; the
choice is part of a run's identity and labels the report."""
from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from conftest import TinyCNN, noise_image_folder, run_cli

import layercrit as lc
from layercrit import EvalData, MeasureConfig
from layercrit.engine.graph import CachedGraph
from layercrit.engine.metrics import CLASS_METRICS, ResetMetrics
from layercrit.errors import ConfigError
from layercrit.store import ResultStore

FEATURE_METRICS = ("criticality", "pred_cos_sim", "pred_l1_err", "pred_l2_err", "criticality_ci")


class Backbone(nn.Module):
    """TinyCNN without its head: returns pooled features [N, 8], no class scores."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = x + torch.relu(self.conv2(x))  # a residual: the cached engine keeps conv2's input in its cache
        return self.flatten(self.pool(x))


def _measure(model, data, factory, **kw):
    return lc.measure(model, data, factory=factory, normalize=None, trials=2, progress=False, **kw)


# --- the option ---------------------------------------------------------------------------------------------

def test_output_values_in_canonical_form_and_refusals():
    assert MeasureConfig().output == "probs"
    assert MeasureConfig(output=" Logits ").output == "logits"
    assert MeasureConfig(output="module: global_pool").output == "module:global_pool"
    fn = lambda model, x: model(x)  # noqa: E731
    assert MeasureConfig(output=fn).output is fn  # Python only: a callable is kept as it is
    for bad in ("softmax", "module:", 3):
        with pytest.raises(ConfigError) as e:
            MeasureConfig(output=bad)
        assert e.value.fields == ("output",)
    with pytest.raises(ConfigError) as e:  # temperature scales a softmax: nothing to scale in logits or features
        MeasureConfig(output="module:fc", temperature=2.0)
    assert e.value.fields == ("temperature", "output") and "module:fc" in str(e.value)
    with pytest.raises(ConfigError):
        MeasureConfig(output="logits", temperature="calibrate")
    assert MeasureConfig(output="probs", temperature=2.0).temperature == 2.0


# --- what is compared -----------------------------------------------------------------------------------------

class Affine(nn.Module):
    """logits = fc(x) + c: a zero reset of fc leaves the constant c, so every metric is computable by hand."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.register_buffer("c", torch.tensor([1.0, 2.0]))

    def forward(self, x):
        return self.fc(x.flatten(1)) + self.c


def test_logits_is_one_minus_cosine_of_raw_logits_by_hand():
    torch.manual_seed(0)
    net = Affine()
    x = torch.rand(6, 3, 1, 1)
    data = EvalData.from_tensors(x, torch.tensor([0, 1, 0, 1, 1, 0]), ["a", "b"])
    w, b = net.fc.weight.detach().double().numpy(), net.fc.bias.detach().double().numpy()
    base = x.flatten(1).double().numpy() @ w.T + b + np.array([1.0, 2.0])
    reset = np.array([1.0, 2.0])  # fc zeroed: weight and bias 0
    cos = base @ reset / (np.linalg.norm(base, axis=1) * np.linalg.norm(reset))
    row = _measure(net, data, None, reset="zero", output="logits", batch_size=4).iloc[0]
    # the model computes in float32, the hand in float64: equal to float32 precision
    assert row["criticality"] == pytest.approx(100 * (1 - cos.mean()), abs=1e-5)
    assert row["pred_l1_err"] == pytest.approx(np.abs(base - reset).sum(1).mean(), rel=1e-6)
    assert row["pred_l2_err"] == pytest.approx(np.linalg.norm(base - reset, axis=1).mean(), rel=1e-6)
    # class metrics are defined for logits: the softmax's cross-entropy and KL, the argmax's agreement
    p_base = np.exp(base) / np.exp(base).sum(1, keepdims=True)
    p = np.exp(reset) / np.exp(reset).sum()
    assert row["pred_kl_div"] == pytest.approx((p_base * (np.log(p_base) - np.log(p))).sum(1).mean(), rel=1e-5)
    assert row["pred_agreement"] == pytest.approx(100 * (base.argmax(1) == 1).mean())
    assert row["top1_acc"] == pytest.approx(100 * (data.labels.numpy() == 1).mean())
    # the default (probs) compares the softmax vectors of the same logits instead
    probs = _measure(net, data, None, reset="zero", batch_size=4).iloc[0]
    cos_p = p_base @ p / (np.linalg.norm(p_base, axis=1) * np.linalg.norm(p))
    assert probs["criticality"] == pytest.approx(100 * (1 - cos_p.mean()), abs=1e-5)
    assert probs["pred_kl_div"] == pytest.approx(row["pred_kl_div"], abs=1e-12)


def test_features_leave_class_metrics_undefined_not_zero():
    m = ResetMetrics()
    m.update(torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[4.0, 3.0], [1.0, 0.0]]), torch.tensor([0, 1]),
             "features")
    r = m.result(float("nan"), 2, classes=False)
    assert r["criticality"] == pytest.approx(100 * (1 - (0.96 + 1.0) / 2))  # cos((3,4), (4,3)) = 24/25
    assert r["pred_l1_err"] == pytest.approx(1.0) and r["pred_l2_err"] == pytest.approx(math.sqrt(2) / 2)
    assert all(r[k] is None for k in CLASS_METRICS)


def test_identical_zero_features_are_unchanged_and_a_zero_one_is_fully_changed():
    m = ResetMetrics()
    zero, one = torch.zeros(1, 3), torch.tensor([[0.0, 2.0, 0.0]])
    m.update(torch.cat([zero, zero, one]), torch.cat([zero, one, one]), torch.tensor([0, 0, 0]), "features")
    r = m.result(float("nan"), 3, classes=False)
    # image 1: both zero (a closed gate in both models): the same output, cosine 1; image 2: one zero: cosine 0
    assert r["criticality"] == pytest.approx(100 * (1 - (1.0 + 0.0 + 1.0) / 3))


def test_a_headless_backbone_is_measured_through_its_pooling_module(tiny_data):
    torch.manual_seed(1)
    net = Backbone()
    with pytest.raises(ConfigError) as e:  # its 8 features are not class scores of the data's 4 classes
        _measure(net, tiny_data, Backbone)
    assert "output" in e.value.fields and "module:" in str(e.value)
    rows = {eng: _measure(net, tiny_data, Backbone, output="module:pool", engine=eng, batch_size=20)
            for eng in ("cached", "naive")}
    df = rows["cached"]
    assert list(df["layer"].unique()) == ["conv1", "conv2"] and len(df) == 4
    assert (df["criticality"] > 0).all() and df["criticality"].notna().all()
    for col in (*CLASS_METRICS, "base_top1_acc"):
        assert df[col].isna().all(), col  # empty, not zero
    assert df["nonfinite"].isna().all()  # undefined is not "non-finite"
    for col in FEATURE_METRICS:
        np.testing.assert_allclose(df[col], rows["naive"][col], rtol=1e-6, atol=1e-9, err_msg=col)


def test_a_timm_backbone_without_head(tiny_data):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=0)
    for m in net.modules():  # untrained timm zeroes each block's last BatchNorm: give every branch some weight
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, 0.0, 0.1)
    data = EvalData.from_tensors(tiny_data.images[:6].repeat_interleave(4, -1).repeat_interleave(4, -2),
                                 tiny_data.labels[:6], tiny_data.classes)
    kw = dict(output="module:global_pool", layers=["conv1", "layer4.1.conv1"], reset="zero")
    rows = {eng: lc.measure(net, data, normalize=None, progress=False, engine=eng, **kw) for eng in ("cached", "naive")}
    assert rows["cached"]["criticality"].gt(0).all() and rows["cached"]["top1_acc"].isna().all()
    np.testing.assert_allclose(rows["cached"]["criticality"], rows["naive"]["criticality"], rtol=1e-5, atol=1e-6)


def test_module_fc_of_a_classifier_equals_logits(tiny_model, tiny_data):
    net, factory = tiny_model
    logits = _measure(net, tiny_data, factory, output="logits")
    fc = _measure(net, tiny_data, factory, output="module:fc")
    for col in FEATURE_METRICS:
        np.testing.assert_allclose(fc[col], logits[col], rtol=1e-12, atol=1e-12, err_msg=col)
    assert fc[list(CLASS_METRICS)].isna().all().all() and logits[list(CLASS_METRICS)].notna().all().all()
    probs = _measure(net, tiny_data, factory)
    assert not np.allclose(probs["criticality"], logits["criticality"])  # a different measure


def test_cached_engine_equals_naive_and_evaluates_nothing_after_the_output_module(tiny_model, tiny_data, caplog):
    net, factory = tiny_model
    with caplog.at_level(logging.WARNING, logger="layercrit"):
        cached = _measure(net, tiny_data, factory, output="module:conv2", layers=["conv1", "conv2"], batch_size=20)
    assert not caplog.records  # traced: no fallback
    naive = _measure(net, tiny_data, factory, output="module:conv2", layers=["conv1", "conv2"], engine="naive",
                     batch_size=20)
    for col in FEATURE_METRICS:
        np.testing.assert_allclose(cached[col], naive[col], rtol=1e-6, atol=1e-9, err_msg=col)
    model = lc.ModelBundle.from_module(net, factory, normalize=None).model
    full = CachedGraph(model, ["model.conv1"])
    cut = CachedGraph(model, ["model.conv1"], output_path="model.conv2")
    assert cut.output.op == "call_module" and cut.output.target == "model.conv2"
    assert len(cut.nodes) < len(full.nodes) and not any(n.target == "model.fc" for n in cut.nodes)
    x = tiny_data.images[:3].float() / 255
    with torch.no_grad():
        assert torch.equal(cut.run_base(x), net.conv2(torch.relu(net.conv1(x))))


def test_layers_after_the_output_module_are_refused(tiny_model, tiny_data):
    net, factory = tiny_model
    with pytest.raises(ConfigError) as e:  # fc runs after conv2: its reset cannot change conv2's output
        _measure(net, tiny_data, factory, output="module:conv2")
    assert e.value.fields == ("output", "layers") and "'!fc'" in str(e.value)
    df = _measure(net, tiny_data, factory, output="module:conv2", layers=["!fc"])
    assert set(df["layer"]) == {"conv1", "conv2"}


def test_unknown_shared_and_non_tensor_modules_are_refused(tiny_model, tiny_data):
    net, factory = tiny_model
    with pytest.raises(ConfigError, match="did you mean module:conv2"):
        _measure(net, tiny_data, factory, output="module:conv22")

    class Twice(TinyCNN):
        def forward(self, x):
            return self.fc(torch.relu(self.conv2(torch.relu(self.conv2(torch.relu(self.conv1(x)))))).mean((2, 3)))

    with pytest.raises(ConfigError, match="runs 2 times"):
        _measure(Twice(), tiny_data, Twice, output="module:conv2", layers=["conv1"])

    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    class WithPair(TinyCNN):
        def __init__(self):
            super().__init__()
            self.pair = Pair()

        def forward(self, x):
            return super().forward(self.pair(x)[0])

    with pytest.raises(ConfigError, match="not a tensor"):
        _measure(WithPair(), tiny_data, WithPair, output="module:pair")


def test_a_callable_gets_the_network_and_its_normalized_input(tiny_model, tiny_data, caplog):
    net, factory = tiny_model
    norm = ((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    kw = dict(factory=factory, normalize=norm, trials=1, layers=["conv1", "conv2"], progress=False)
    module = lc.measure(net, tiny_data, output="module:conv2", **kw)
    with caplog.at_level(logging.WARNING, logger="layercrit"):
        called = lc.measure(net, tiny_data, output=lambda m, x: m.conv2(torch.relu(m.conv1(x))), **kw)
    assert any("callable" in r.getMessage() and "naive" in r.getMessage() for r in caplog.records)
    for col in FEATURE_METRICS:
        np.testing.assert_allclose(called[col], module[col], rtol=1e-6, atol=1e-9, err_msg=col)
    assert called["top1_acc"].isna().all()


# --- recorded, resumed, reported ------------------------------------------------------------------------------

def test_recorded_in_the_run_and_a_resume_with_another_output_is_refused(tiny_model, tiny_data, tmp_path):
    net, factory = tiny_model
    db = tmp_path / "s.db"
    _measure(net, tiny_data, factory, output="module:fc", store=db)
    with ResultStore(db) as store:
        run = store.runs().iloc[0]
        stored = store.results()
        raw = store.conn.execute("SELECT top1_acc, recovered_acc, nonfinite FROM results").fetchall()
    assert '"output": "module:fc"' in run["identity"] and '"output": "module:fc"' in run["config"]
    assert pd.isna(run["base_top1_acc"])
    assert all(r == (None, None, None) for r in raw)  # NULL: undefined, and not flagged as non-finite
    assert stored["top1_acc"].dtype == float and stored["top1_acc"].isna().all()
    again = _measure(net, tiny_data, factory, output="module:fc", store=db)  # same output: resumes (nothing to do)
    assert len(again) == len(stored)
    for other in ("logits", "probs"):
        with pytest.raises(ConfigError, match="output"):
            _measure(net, tiny_data, factory, output=other, store=db)
    probs_db = tmp_path / "p.db"
    _measure(net, tiny_data, factory, store=probs_db)
    with ResultStore(probs_db) as store:
        assert '"output"' not in store.runs().iloc[0]["identity"]  # the default: identities as before


def test_the_report_names_what_was_compared(tiny_model, tiny_data, tmp_path):
    from layercrit.analysis import load_results
    from layercrit.errors import LayercritError

    net, factory = tiny_model
    feats, logits, probs = tmp_path / "f.db", tmp_path / "l.db", tmp_path / "p.db"
    _measure(net, tiny_data, factory, output="module:conv2", layers=["conv1", "conv2"], store=feats)
    _measure(net, tiny_data, factory, output="logits", store=logits)
    lc.measure(net, tiny_data, factory=factory, normalize=None, trials=2, progress=False, store=probs,
               **{"samples": None})
    assert load_results([feats]).metric_label == "criticality of module:conv2"
    assert load_results([logits]).metric_label == "criticality of logits"
    assert load_results([probs]).metric_label == "criticality"
    assert load_results([logits], metric="disagreement").metric_label == "top-1 disagreement of logits"
    with pytest.raises(ConfigError, match="class scores") as e:
        load_results([feats], metric="disagreement")
    assert e.value.fields == ("metric",)
    with ResultStore(probs) as store:  # another model id so that the two databases can be reported together
        store.conn.execute("UPDATE runs SET model_id = 'other'")
        store.conn.commit()
    with pytest.raises(LayercritError, match="different outputs"):
        load_results([logits, probs])


def test_a_study_file_key_and_the_cli_flag(tmp_path):
    from layercrit.study import load_study

    path = tmp_path / "s.toml"
    path.write_text('[study]\ndata = "."\n[measure]\noutput = "module:avgpool"\n'
                    '[[models]]\nid = "m"\nspec = "arch:cifar_resnet50"\n')
    assert load_study(path).config.output == "module:avgpool"
    help_text = run_cli("measure", "--help").stdout
    assert "--output" in help_text and "module:NAME" in help_text
    bad = run_cli("measure", "--model", "arch:cifar_resnet50", "--data", str(tmp_path), "--output", "softmax",
                  "--db", str(tmp_path / "x.db"))
    assert bad.returncode == 2 and "--output 'softmax'" in bad.stderr
    both = run_cli("measure", "--model", "arch:cifar_resnet50", "--data", str(tmp_path), "--output", "logits",
                   "--temperature", "2", "--db", str(tmp_path / "x.db"))
    assert both.returncode == 2 and "--temperature" in both.stderr and "--output" in both.stderr


BACKBONE_FILE = '''
import torch
import torch.nn as nn


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.proj = nn.Linear(8, 16)  # an embedding projection, as CLIP-style encoders end: no class scores

    def forward(self, x):
        return self.proj(self.pool(torch.relu(self.conv2(torch.relu(self.conv1(x))))).flatten(1))


class Trunk(nn.Module):  # no Linear at all: no class count to find, and none asked for
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.pool(torch.relu(self.conv2(torch.relu(self.conv1(x))))).flatten(1)
'''


@pytest.mark.parametrize("source", ["arch", "file"])
def test_cli_measures_a_headless_backbone(tmp_path, source):
    from safetensors.torch import save_file

    root = noise_image_folder(tmp_path / "data", classes=2, per_class=4, size=8)
    (tmp_path / "backbone.py").write_text(BACKBONE_FILE)
    db = tmp_path / "b.db"
    model = ["--model", f"arch:{tmp_path / 'backbone.py'}:Backbone"]
    if source == "file":  # trained weights of a network without a Linear: no --num-classes needed
        namespace: dict = {}
        exec(BACKBONE_FILE, namespace)
        save_file(namespace["Trunk"]().state_dict(), str(tmp_path / "trunk.safetensors"))
        model = ["--model", f"file:{tmp_path / 'trunk.safetensors'}", "--arch", f"{tmp_path / 'backbone.py'}:Trunk"]
    proc = run_cli("measure", *model, "--data", str(root),
                   "--input-size", "8", "--normalize", "none", "--samples", "8", "--trials", "1",
                   "--output", "module:pool", "--layers", "conv*", "--db", str(db), "--no-progress",
                   "--no-data-cache")
    assert proc.returncode == 0, proc.stderr
    assert "base top-1 n/a" in proc.stdout and "mean criticality of module:pool (random)" in proc.stdout
    with ResultStore(db) as store:
        rows = store.results()
    assert len(rows) == 2 and rows["criticality"].notna().all() and rows["top1_acc"].isna().all()


def test_a_network_without_a_linear_layer_is_not_silently_taken_as_a_classifier(tmp_path, caplog):
    namespace: dict = {}
    exec(BACKBONE_FILE, namespace)
    trunk = namespace["Trunk"]().eval()  # 8 pooled features, no Linear
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    eight = lc.EvalData.from_tensors(images, torch.arange(16) % 8)
    with caplog.at_level(logging.WARNING, logger="layercrit"):
        lc.measure(trunk, eight, normalize=None, reset="zero", layers=["conv1"], progress=False)
    assert any("no Linear layer" in r.getMessage() and "output module:<name>" in r.getMessage()
               for r in caplog.records)
    two = lc.EvalData.from_tensors(images, torch.arange(16) % 2)
    with pytest.raises(ConfigError, match="no Linear layer") as e:
        lc.measure(trunk, two, normalize=None, reset="zero", layers=["conv1"], progress=False)
    assert e.value.fields == ("output",) and "num_classes" not in str(e.value)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="layercrit"):  # features compared: nothing to warn about
        lc.measure(trunk, two, normalize=None, reset="zero", layers=["conv1"], output="module:pool", progress=False)
    assert not any("no Linear layer" in r.getMessage() for r in caplog.records)
