"""The cached-prefix engine equals the naive one; adaptive sampling; exact resume mid-unit."""
import logging

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
import torchvision

import layercrit as lc
from layercrit.engine.graph import CachedGraph
from layercrit.store import METRICS

COMPARED = [m for m in METRICS if m != "criticality_ci"]


def _data(n, size, classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return lc.EvalData.from_tensors(images, torch.arange(n) % classes, [str(i) for i in range(classes)])


def _both_engines(model, factory, data, **kw):
    # a plain module takes its factory and normalization here; a bundle already knows both
    module_kw = {} if isinstance(model, lc.ModelBundle) else {"factory": factory, "normalize": None}
    out = {}
    for engine in ("naive", "cached"):
        out[engine] = lc.measure(model, data, **module_kw, engine=engine, samples=None, progress=False, **kw)
    return out["naive"], out["cached"]


def _assert_same(naive, cached, atol=1e-5):
    assert len(naive) == len(cached) > 0
    a = naive.set_index(["layer", "reset", "trial"]).sort_index()
    b = cached.set_index(["layer", "reset", "trial"]).sort_index()
    assert list(a.index) == list(b.index)
    for m in COMPARED:
        np.testing.assert_allclose(b[m].to_numpy(), a[m].to_numpy(), rtol=0, atol=atol, err_msg=m)


def test_torchvision_resnet50_every_layer():
    # torchvision's Bottleneck uses ReLU(inplace=True) and `out += identity`: in-place ops must not corrupt the cache
    torch.manual_seed(0)
    net = torchvision.models.resnet50(num_classes=10)
    data = _data(4, 64, 10)
    naive, cached = _both_engines(net, lambda: torchvision.models.resnet50(num_classes=10), data, trials=1,
                                  reset=["random", "zero"], batch_size=2)
    assert naive.layer.nunique() == 54
    _assert_same(naive, cached)
    assert all(m.inplace for m in net.modules() if hasattr(m, "inplace"))  # restored after the run


def test_cifar_resnet50_every_layer():
    bundle = lc.create_model("arch:cifar_resnet50")
    naive, cached = _both_engines(bundle, None, _data(12, 32, 10), trials=2, batch_size=5)
    assert len(naive) == 54 * 2
    _assert_same(naive, cached)


def test_vit_tiny_every_layer():
    def build():
        return timm.create_model("vit_tiny_patch16_224", img_size=64, num_classes=10)

    torch.manual_seed(1)
    naive, cached = _both_engines(build(), build, _data(3, 64, 10), trials=1, batch_size=3)
    assert naive.layer.nunique() == 1 + 12 * 4 + 1
    _assert_same(naive, cached)


def test_cached_graph_keeps_only_the_frontier_and_recomputes_only_downstream():
    bundle = lc.create_model("arch:cifar_resnet50")
    paths = ["model." + layer.name for layer in lc.discover_layers(bundle.network, 32)]
    graph = CachedGraph(bundle.model, paths)
    # resetting the classifier recomputes just fc; resetting the stem recomputes nearly everything
    assert [n.target for n in graph.affected["model.fc"] if n.op == "call_module"] == ["model.fc"]
    stem = graph.affected["model.conv1"]
    assert len(stem) > 0.9 * len([n for n in graph.nodes if n.op != "placeholder"])
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        out = graph.run_base(x)
        assert torch.equal(out, bundle.model(x))
        assert 0 < graph.cache_bytes
        assert torch.equal(graph.run_reset("model.layer3.2.conv1"), out)  # nothing reset: same values


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.conv(x)
        if x.mean() > 1e9:
            x = -x
        return self.fc(x.mean((2, 3)))


def test_untraceable_model_falls_back_to_naive_with_a_warning(caplog):
    torch.manual_seed(0)
    net = Untraceable()
    data = _data(6, 8, 3)
    with caplog.at_level(logging.WARNING, logger="layercrit"):
        naive, cached = _both_engines(net, Untraceable, data, trials=1)
    warnings = [r for r in caplog.records if "cannot trace" in r.getMessage()]
    assert len(warnings) == 1 and "using engine naive" in warnings[0].getMessage()  # Python: the parameter
    from layercrit.cli import _LowerLevelFormatter

    assert "using --engine naive" in _LowerLevelFormatter("%(message)s").format(warnings[0])  # the CLI: its flag
    _assert_same(naive, cached, atol=0)


def test_adaptive_sampling_stops_early_within_its_interval(tiny_model):
    model, factory = tiny_model
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (1000, 3, 8, 8), dtype=torch.uint8, generator=g)
    data = lc.EvalData.from_tensors(images, torch.arange(1000) % 4, list("abcd"))
    kw = dict(factory=factory, normalize=None, samples=None, trials=8, progress=False, batch_size=50, seed=1)
    exact = lc.measure(model, data, **kw)
    fast = lc.measure(model, data, target_ci=2.0, **kw)
    assert (exact.n_samples == 1000).all() and (exact.criticality_ci == 0).all()
    merged = fast.merge(exact, on=["layer", "reset", "trial"], suffixes=("", "_exact"))
    assert len(merged) == 3 * 8
    stopped = merged[merged.n_samples < 1000]
    assert len(stopped) >= 12, "a 2-point target should stop most units early"
    assert (stopped.n_samples >= 100).all() and (stopped.n_samples % 50 == 0).all()
    assert (stopped.criticality_ci <= 2.0).all()
    assert merged.n_samples.sum() < 0.6 * exact.n_samples.sum()
    # a 95 % interval: most estimates hold the exact (all-image) value
    inside = (merged.criticality - merged.criticality_exact).abs() <= merged.criticality_ci + 1e-9
    assert inside.mean() >= 0.8, merged.loc[~inside, ["layer", "criticality", "criticality_exact", "criticality_ci"]]


def test_resume_mid_unit_gives_identical_numbers(tmp_path, monkeypatch, tiny_model, tiny_data):
    model, factory = tiny_model
    kw = dict(factory=factory, normalize=None, samples=None, trials=2, seed=4, batch_size=8, progress=False)
    clean = lc.measure(model, tiny_data, **kw)
    import importlib

    measure_mod = importlib.import_module("layercrit.engine.metrics")
    calls = {"n": 0}
    real_update = measure_mod.ResetMetrics.update

    def interrupted_update(self, *args):
        calls["n"] += 1
        if calls["n"] == 10:  # second batch, mid-way through the units
            raise KeyboardInterrupt
        return real_update(self, *args)

    monkeypatch.setattr(measure_mod.ResetMetrics, "update", interrupted_update)
    db = tmp_path / "s.db"
    with pytest.raises(KeyboardInterrupt):
        lc.measure(model, tiny_data, store=db, **kw)
    with lc.ResultStore(db) as store:
        run_id = int(store.runs().run_id[0])
        assert store.partial_states(run_id), "progress inside units was saved"
        assert store.results().empty
    monkeypatch.setattr(measure_mod.ResetMetrics, "update", real_update)
    resumed = lc.measure(model, tiny_data, store=db, **kw)
    _assert_same(clean, resumed, atol=0)
    with lc.ResultStore(db) as store:
        assert not store.partial_states(run_id)


def test_measure_leaves_the_callers_module_as_it_found_it(tiny_model, tiny_data):
    model, factory = tiny_model
    model.train()  # the caller's mode, parameters and their memory layout must come back unchanged
    model.conv2.eval()
    params = {n: (p, p.detach().clone(), p.stride()) for n, p in model.named_parameters()}
    lc.measure(model, tiny_data, factory=factory, samples=None, trials=1, reset=["random", "zero"], progress=False,
               normalize=None, channels_last=True)
    assert model.training and model.conv1.training and not model.conv2.training
    for n, p in model.named_parameters():
        same, value, stride = params[n]
        assert p is same and torch.equal(p, value) and p.stride() == stride, n


class DiscardedInplace(nn.Module):
    """``out.add_(...)`` whose result is not used: the trace's out-of-place rewrite would lose the addition."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x):
        out = self.c1(x)
        out.add_(self.c2(x))
        return self.fc(out.mean((2, 3)))


class InplaceOnCached(nn.Module):
    """``torch.relu_`` on a value another layer already read: it changes the cached activation."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x):
        h = self.c1(x)
        a = self.c2(h)
        b = torch.relu_(h)
        return self.fc((a + b).mean((2, 3)))


class Tied(nn.Module):
    """Two convolutions sharing one weight: a reset of one changes the other's output too."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 3)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.fc((self.a(x) + self.b(x)).mean((2, 3)))


@pytest.mark.parametrize("cls", [DiscardedInplace, InplaceOnCached, Tied])
def test_code_the_trace_cannot_follow_is_measured_naively_with_a_warning(cls, caplog):
    torch.manual_seed(0)
    net = cls()
    data = _data(12, 8, 3)
    with caplog.at_level(logging.WARNING, logger="layercrit"):
        naive, cached = _both_engines(net, cls, data, trials=2, reset=["random"])
    warnings = [r.getMessage() for r in caplog.records if "does not reproduce a full forward pass" in r.getMessage()]
    assert len(warnings) == 1 and "using engine naive" in warnings[0]
    _assert_same(naive, cached, atol=0)


def test_the_check_keeps_the_cached_engine_for_models_it_can_follow(caplog):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=4)  # ReLU(inplace=True), residual additions
    with caplog.at_level(logging.WARNING, logger="layercrit"):
        naive, cached = _both_engines(net, lambda: torchvision.models.resnet18(num_classes=4), _data(8, 32, 4),
                                      trials=1, layers=["layer1.*", "fc"])
    assert not [r for r in caplog.records if "does not reproduce" in r.getMessage()]
    _assert_same(naive, cached)


def test_a_factory_building_another_shape_is_refused_not_broadcast():
    from conftest import TinyCNN

    torch.manual_seed(0)
    net = TinyCNN(num_classes=4)
    data = _data(8, 8, 4)
    with pytest.raises(lc.LayercritError, match=r"reset random of fc.weight gives shape \(1, 8\), the model's is "
                                                r"\(4, 8\): factory") as e:
        lc.measure(net, data, factory=lambda: TinyCNN(num_classes=1), normalize=None, reset="random",
                   layers=["fc"], trials=1, progress=False)
    assert e.value.fields == ("factory",)
