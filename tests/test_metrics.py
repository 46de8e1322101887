"""Metrics and the measurement loop on a tiny CNN with generated data."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import layercrit as lc
from layercrit.engine import ResetMetrics
from layercrit.resets import reset_seed


def test_zero_reset_of_classifier_gives_uniform_softmax(tiny_model, tiny_data):
    model, factory = tiny_model
    df = lc.measure(model, tiny_data, factory=factory, normalize=None, layers=["fc"], reset="zero", samples=None,
                    progress=False)
    assert len(df) == 1  # deterministic reset: one trial only
    row = df.iloc[0]
    with torch.no_grad():
        base = model(tiny_data.images.float() / 255).double()
    p = base.softmax(1)
    C = p.shape[1]
    # cos(uniform, p) = 1 / (sqrt(C) * |p|); CE(p || uniform) = log C; KL = log C - H(p)
    expected_cos = (1 / (math.sqrt(C) * p.norm(dim=1))).mean().item()
    entropy = -(p * p.log()).sum(1).mean().item()
    assert row.pred_cos_sim == pytest.approx(expected_cos, abs=1e-9)
    assert row.criticality == pytest.approx(100 * (1 - expected_cos), abs=1e-7)
    assert row.pred_ce_loss == pytest.approx(math.log(C), abs=1e-9)
    assert row.pred_kl_div == pytest.approx(math.log(C) - entropy, abs=1e-9)
    assert row.loss == pytest.approx(math.log(C), abs=1e-9)
    assert row.pred_l1_err == pytest.approx((p - 1 / C).abs().sum(1).mean().item(), abs=1e-9)
    # all-equal logits: argmax is class 0
    assert row.top1_acc == pytest.approx(100 * (tiny_data.labels == 0).double().mean().item())
    base_top1 = 100 * (base.argmax(1) == tiny_data.labels).double().mean().item()
    assert row.base_top1_acc == pytest.approx(base_top1)
    assert row.pred_agreement == pytest.approx(100 * (base.argmax(1) == 0).double().mean().item())


def test_metrics_of_identical_predictions():
    logits = torch.randn(10, 6)
    labels = torch.arange(10) % 6
    m = ResetMetrics()
    m.update(logits, logits, labels)
    r = m.result(base_top1=50.0, population=10)
    assert r["criticality"] == pytest.approx(0, abs=1e-9)
    assert r["pred_l1_err"] == pytest.approx(0, abs=1e-12)
    assert r["pred_kl_div"] == pytest.approx(0, abs=1e-12)
    assert r["pred_agreement"] == 100
    assert r["pred_ce_loss"] == pytest.approx(-(logits.double().softmax(1) * logits.double().log_softmax(1)).sum(1).mean().item())
    assert r["recovered_acc"] == pytest.approx(r["top1_acc"] / 50.0)


def test_batched_metrics_equal_one_batch():
    torch.manual_seed(0)
    a, b, y = torch.randn(37, 5), torch.randn(37, 5), torch.randint(0, 5, (37,))
    whole, parts = ResetMetrics(), ResetMetrics()
    whole.update(a, b, y)
    for s in range(0, 37, 8):
        parts.update(a[s:s + 8], b[s:s + 8], y[s:s + 8])
    for k, v in whole.result(40.0, 100).items():
        assert parts.result(40.0, 100)[k] == pytest.approx(v, rel=1e-12, abs=1e-12)
    cos = F.cosine_similarity(a.double().softmax(1), b.double().softmax(1))
    assert whole.result(40.0, 100)["pred_cos_sim"] == pytest.approx(cos.mean().item(), abs=1e-12)
    # confidence half-width: normal approximation with finite-population correction
    expected = 100 * 1.959963984540054 * cos.std().item() / math.sqrt(37) * math.sqrt((100 - 37) / 99)
    assert whole.criticality_ci(100) == pytest.approx(expected, rel=1e-9)
    assert whole.criticality_ci(37) == 0.0  # every image seen: the value is exact


def _measure(model, factory, data, layers, trials=3):
    return lc.measure(model, data, factory=factory, normalize=None, layers=layers, trials=trials, samples=None, seed=5,
                      progress=False, batch_size=16)


def test_random_reset_is_reproducible_and_independent_of_selection(tiny_model, tiny_data):
    model, factory = tiny_model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    full = _measure(model, factory, tiny_data, None)
    again = _measure(model, factory, tiny_data, None)
    assert len(full) == 3 * 3
    pd.testing.assert_frame_equal(full.drop(columns="elapsed_seconds"), again.drop(columns="elapsed_seconds"))
    # the trained weights are restored after every reset
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # one layer alone, and layers in another order, give the same numbers for the same (seed, trial, layer)
    alone = _measure(model, factory, tiny_data, ["conv2"])
    reordered = _measure(model, factory, tiny_data, ["fc", "conv1"])
    cols = ["layer", "trial", "criticality", "top1_acc", "loss", "pred_l2_err"]
    key = ["layer", "trial"]
    for part in (alone, reordered):
        merged = part[cols].merge(full[cols], on=key, suffixes=("", "_full"))
        assert len(merged) == len(part)
        for c in cols[2:]:
            np.testing.assert_array_equal(merged[c].to_numpy(), merged[c + "_full"].to_numpy())
    # trials differ (a real random draw), and criticality is positive for a re-randomized classifier
    fc = full[full.layer == "fc"]
    assert fc.criticality.nunique() == 3
    assert (fc.criticality > 0).all()


def test_layers_are_in_forward_order(tiny_model, tiny_data):
    model, factory = tiny_model
    df = _measure(model, factory, tiny_data, None, trials=1)
    assert df.sort_values("layer_index").layer.tolist() == ["conv1", "conv2", "fc"]


def test_reset_draw_never_equals_the_models_own_initialization():
    bundle = lc.create_model("arch:cifar_resnet50", init_seed=0)
    from layercrit.resets import ResetContext, parse_reset

    r = parse_reset("random").prepare(ResetContext(bundle.factory, bundle.network, seed=0))
    for trial in range(3):
        assert reset_seed(0, trial) > 2**32
        drawn = r.values(bundle.network, "conv1", trial)["weight"]
        assert not torch.equal(drawn, bundle.network.conv1.weight)
    other = lc.create_model("arch:cifar_resnet50", init_seed=1)
    assert not torch.equal(other.network.conv1.weight, bundle.network.conv1.weight)
    again = lc.create_model("arch:cifar_resnet50", init_seed=0)
    assert again.checksum() == bundle.checksum()


def test_interpolate_endpoints(tiny_model, tiny_data, tmp_path):
    model, factory = tiny_model
    from layercrit.models import save_safetensors

    torch.manual_seed(99)
    init = factory()
    ckpt = tmp_path / "epoch0.safetensors"
    save_safetensors(init, ckpt)
    df = lc.measure(model, tiny_data, factory=factory, normalize=None,
                    reset=["interpolate:0", f"init:{ckpt}", f"interpolate:1:{ckpt}"], samples=None, progress=False)
    at0 = df[df.reset == "interpolate:0"]
    assert len(at0) == 3 * 3  # toward a random draw: stochastic, so every trial
    assert (at0.criticality.abs() < 1e-9).all()
    init_rows = df[df.reset == f"init:{ckpt}"].set_index("layer")
    at1 = df[df.reset == f"interpolate:1:{ckpt}"].set_index("layer")
    assert len(init_rows) == len(at1) == 3
    np.testing.assert_allclose(at1.loc[init_rows.index, "criticality"], init_rows.criticality, atol=1e-9)
    assert (init_rows.criticality > 0).all()


def test_another_checkpoint_under_the_same_init_name_is_refused_on_resume(tiny_model, tiny_data, tmp_path):
    from layercrit.models import save_safetensors

    model, factory = tiny_model
    ckpt, db = tmp_path / "init.safetensors", tmp_path / "r.db"
    torch.manual_seed(1)
    save_safetensors(factory(), ckpt)
    kw = dict(factory=factory, normalize=None, reset=[f"init:{ckpt}"], progress=False, store=str(db))
    lc.measure(model, tiny_data, layers=["conv1"], **kw)
    torch.manual_seed(2)
    save_safetensors(factory(), ckpt)  # other weights, same file name
    with pytest.raises(lc.LayercritError, match="reset_files"):
        lc.measure(model, tiny_data, layers=["conv1", "conv2"], **kw)



def test_an_init_reset_leaves_the_callers_random_state_alone(tiny_model, tiny_data, tmp_path):
    from layercrit.models import save_safetensors

    model, factory = tiny_model
    ckpt = tmp_path / "init.safetensors"
    save_safetensors(factory(), ckpt)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    lc.measure(model, tiny_data, factory=factory, normalize=None, reset=[f"init:{ckpt}", "random"], trials=1,
               layers=["conv1"], progress=False)
    assert torch.equal(torch.get_rng_state(), before)
