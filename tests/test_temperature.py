"""measure(temperature=T | "calibrate"): every softmax metric on logits / T; "calibrate" fits T on held-out images
(disjoint from the measured ones, which stay the same), records it, and a resume with another temperature is refused."""
from __future__ import annotations

import json
import sqlite3

import pytest
import torch
import torch.nn.functional as F

import layercrit as lc
from conftest import run_cli
from layercrit.engine.calibration import fit_temperature
from layercrit.errors import LayercritError


def by_hand(model, factory, data, temperature: float, layer: str = "conv2") -> dict:
    """criticality and agreement of a zero reset of ``layer``, computed from logits / T directly."""
    x = data.images.float() / 255
    with torch.no_grad():
        base = model(x) / temperature
        reset = factory()
        reset.load_state_dict(model.state_dict())
        getattr(reset, layer).weight.zero_()
        getattr(reset, layer).bias.zero_()
        out = reset(x) / temperature
    cos = F.cosine_similarity(out.double().softmax(1), base.double().softmax(1), dim=1).mean().item()
    return {"criticality": 100 * (1 - cos), "pred_agreement": 100 * (out.argmax(1) == base.argmax(1)).double().mean()}


def test_a_fixed_temperature_scales_every_softmax_metric(tiny_model, tiny_data):
    model, factory = tiny_model
    kw = dict(normalize=None, factory=factory, reset="zero", layers=["conv2"], progress=False)
    plain = lc.measure(model, tiny_data, **kw).iloc[0]
    hot = lc.measure(model, tiny_data, temperature=0.05, **kw).iloc[0]
    expected = by_hand(model, factory, tiny_data, 0.05)
    assert hot["criticality"] == pytest.approx(expected["criticality"], abs=1e-6)
    assert plain["criticality"] == pytest.approx(by_hand(model, factory, tiny_data, 1.0)["criticality"], abs=1e-6)
    assert hot["criticality"] != pytest.approx(plain["criticality"], abs=1e-3)  # the scaling took effect
    assert hot["pred_agreement"] == plain["pred_agreement"] == pytest.approx(expected["pred_agreement"])
    assert hot["top1_acc"] == plain["top1_acc"]


def test_calibrate_fits_on_held_out_images_and_records_it(tiny_model, tiny_data, tmp_path):
    model, factory = tiny_model
    kw = dict(normalize=None, factory=factory, reset="zero", layers=["conv2"], progress=False, samples=20)
    db = tmp_path / "cal.db"
    row = lc.measure(model, tiny_data, temperature="calibrate", calibration_samples=16, store=str(db), **kw).iloc[0]
    config = json.loads(sqlite3.connect(db).execute("SELECT config FROM runs").fetchone()[0])
    cal = config["calibration"]
    # held out: the 16 images after the 20 measured in the same seeded order
    held_out = tiny_data.subset(16, 0, skip=20)
    measured = tiny_data.subset(20, 0)
    assert cal["data_fingerprint"] == held_out.fingerprint != measured.fingerprint
    with torch.no_grad():
        fitted = fit_temperature(model(held_out.images.float() / 255), held_out.labels)
    assert cal["temperature"] == fitted and cal["images"] == 16 and cal["nll_at_t"] <= cal["nll_at_1"]
    assert config["temperature"] == "calibrate"
    expected = by_hand(model, factory, measured, fitted)
    assert row["criticality"] == pytest.approx(expected["criticality"], abs=1e-6)
    # the measured images are those of an uncalibrated run (same top-1 of the unmodified model)
    plain = lc.measure(model, tiny_data, **kw).iloc[0]
    assert plain["top1_acc"] == row["top1_acc"] and plain["pred_agreement"] == row["pred_agreement"]
    # the same store, the same model id, another temperature: refused, like any other change
    with pytest.raises(LayercritError, match="temperature"):
        lc.measure(model, tiny_data, temperature=2.0, calibration_samples=16, store=str(db), **kw)


def test_calibrate_again_with_other_held_out_images_is_refused(tiny_model, tiny_data, tmp_path):
    model, factory = tiny_model
    with torch.no_grad():  # labels the model mostly predicts: an interior T that depends on the images
        predicted = model(tiny_data.images.float() / 255).argmax(1)
    labels = torch.where(torch.arange(48) % 4 == 0, (predicted + 1) % 4, predicted)
    data = lc.EvalData.from_tensors(tiny_data.images, labels, ["a", "b", "c", "d"])
    kw = dict(normalize=None, factory=factory, reset="zero", progress=False, samples=20)
    db = tmp_path / "cal.db"
    lc.measure(model, data, temperature="calibrate", calibration_samples=16, layers=["conv2"], store=str(db), **kw)
    rows = sqlite3.connect(db).execute("SELECT COUNT(*) FROM results").fetchone()[0]
    with pytest.raises(LayercritError, match=r"measured at the temperature T = .* this fit gave") as e:
        lc.measure(model, data, temperature="calibrate", calibration_samples=28, layers=["conv1", "conv2"],
                   store=str(db), **kw)
    assert e.value.fields == ("calibration_samples", "seed")
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM results").fetchone()[0] == rows  # nothing added
    # the same held-out images fit the same T: the run resumes and adds the new layer
    lc.measure(model, data, temperature="calibrate", calibration_samples=16, layers=["conv1", "conv2"],
               store=str(db), **kw)
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM results").fetchone()[0] == rows + 1


def test_a_temperature_at_the_edge_of_the_search_is_a_warning(tiny_data, caplog):
    torch.manual_seed(0)
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    with torch.no_grad():
        flat[1].weight.mul_(200)  # huge, wrong logits: the NLL keeps falling as T grows
    with caplog.at_level("WARNING", logger="layercrit"):
        lc.measure(flat, tiny_data, normalize=None, temperature="calibrate", samples=20, calibration_samples=16,
                   reset="zero", progress=False)
    assert any("edge of the search" in r.getMessage() for r in caplog.records)


def test_calibrate_needs_images_beside_the_measured_ones(tiny_model, tiny_data):
    model, factory = tiny_model
    kw = dict(normalize=None, factory=factory, reset="zero", layers=["conv2"], progress=False)
    with pytest.raises(ValueError, match="held out"):
        lc.measure(model, tiny_data, temperature="calibrate", **kw)  # all 48 images measured
    with pytest.raises(ValueError, match="calibration_samples"):
        lc.measure(model, tiny_data, temperature="calibrate", samples=40, calibration_samples=16, **kw)


def test_the_command_line_and_study_files_take_it(tmp_path):
    from layercrit.engine.config import MeasureConfig

    assert MeasureConfig(temperature="calibrate").temperature == "calibrate"
    assert MeasureConfig(temperature=1).temperature is None  # T = 1 is the unscaled softmax
    bad = run_cli("measure", "--model", "arch:cifar_resnet50", "--data", str(tmp_path), "--temperature", "hot",
                  "--db", str(tmp_path / "x.db"))
    # argparse's refusal: its usage, then one error line naming the flag and what it takes
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "--temperature" in bad.stderr.splitlines()[-1] and "calibrate" in bad.stderr.splitlines()[-1]
    negative = run_cli("measure", "--model", "arch:cifar_resnet50", "--data", str(tmp_path), "--temperature", "-1",
                       "--db", str(tmp_path / "x.db"))
    assert negative.returncode == 2 and "--temperature" in negative.stderr and "positive" in negative.stderr


def test_a_study_measures_again_under_another_temperature_or_output(tiny_model, tiny_data, tmp_path):
    """study run's "already measured" check: a database measured without a temperature does not stand in for a
    calibrated measurement (nor a softmax one for logits)."""
    from layercrit.engine.config import MeasureConfig
    from layercrit.study.run import _finished

    model, factory = tiny_model
    db = tmp_path / "s.db"
    lc.measure(model, tiny_data, normalize=None, factory=factory, reset="random", layers=["conv2"], trials=1,
               samples=20, progress=False, store=str(db))
    model_id = sqlite3.connect(db).execute("SELECT model_id FROM runs").fetchone()[0]
    same = dict(samples=20, trials=1, reset=("random",))
    assert _finished(db, model_id, MeasureConfig(**same))
    assert not _finished(db, model_id, MeasureConfig(**same, temperature="calibrate"))
    assert not _finished(db, model_id, MeasureConfig(**same, temperature=2.0))
    assert not _finished(db, model_id, MeasureConfig(**same, output="logits"))
