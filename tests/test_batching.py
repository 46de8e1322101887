"""--batch-size auto (engine/batching.py) and the fast-bf16 check (engine/hardware.py). No timing assertions."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from layercrit.engine import batching, hardware
from layercrit.engine.batching import (BatchChoice, auto_batch_size, choose_batch_size, estimate_bytes,
                                       parse_memory, peak_bytes)
from layercrit.errors import ConfigError, LayercritError
from layercrit.validate import batch_size_or_auto, memory_size


# --- parsing -------------------------------------------------------------------------------------------

def test_parse_memory_sizes_and_shares():
    assert parse_memory("8G") == 8 * 2**30
    assert parse_memory("512MiB") == 512 * 2**20
    assert parse_memory("2.5gb") == int(2.5 * 2**30)
    assert parse_memory("1234") == 1234
    assert parse_memory(None) is None
    assert 0 < parse_memory("50%") <= batching.free_memory("cpu")
    for bad in ("lots", "-1G", "0", "12 parsecs", "0%", "150%"):
        with pytest.raises(ConfigError, match="max_memory"):
            parse_memory(bad)


def test_check_memory_keeps_shares_for_later():
    assert memory_size("40%") == "40%" and memory_size("1.5K") == 1536
    assert memory_size(None) is None and memory_size(4096) == 4096
    for bad in (0, -5, 1.5, True, "0.1b"):
        with pytest.raises(LayercritError, match="max_memory"):
            memory_size(bad, "max_memory")


def test_batch_size_or_auto():
    assert batch_size_or_auto("auto") == "auto" and batch_size_or_auto("AUTO") == "auto"
    assert batch_size_or_auto(64) == 64 and batch_size_or_auto(32.0) == 32
    for bad in (0, -3, "big", "64"):
        with pytest.raises(ConfigError, match="batch_size"):
            batch_size_or_auto(bad)


# --- the chooser, with a fake workload and a fake clock ---------------------------------------------------

class FakeWork:
    """run(b) advances a fake clock by b / rate(b) seconds."""

    def __init__(self, rates: dict[int, float]):
        self.rates, self.now, self.calls = rates, 0.0, []

    def clock(self) -> float:
        return self.now

    def __call__(self, b: int) -> None:
        self.calls.append(b)
        self.now += b / self.rates[b]


def test_picks_the_fastest_candidate_that_fits():
    work = FakeWork({8: 10, 16: 20, 32: 30, 64: 30.5, 128: 50})
    c = choose_batch_size(work, n_images=1000, budget_bytes=10**9, candidates=(8, 16, 32, 64, 128),
                          memory=(0, 10**6), clock=work.clock, max_seconds=1e9)
    # 64 is not 3 % faster than 32: the search stops there (128 is never tried)
    assert c.batch_size == 32 and set(c.images_per_s) == {8, 16, 32, 64} and 128 not in work.calls
    assert c.images_per_s[32] == pytest.approx(30)


def test_budget_excludes_large_batches():
    work = FakeWork({8: 10, 16: 20, 32: 40, 64: 80})
    per_image = 10 * 2**20
    budget = int(batching.SAFETY * 20 * per_image)  # 16 images fit, 32 do not
    c = choose_batch_size(work, n_images=1000, budget_bytes=budget, candidates=(8, 16, 32, 64),
                          memory=(0, per_image), clock=work.clock, max_seconds=1e9)
    assert c.batch_size == 16 and c.too_big == [32, 64] and max(work.calls) == 16


def test_below_the_smallest_candidate_and_nothing_fits():
    work = FakeWork({b: 10.0 for b in (1, 2, 4, 8)})
    c = choose_batch_size(work, n_images=100, budget_bytes=int(batching.SAFETY * 5 * 100), candidates=(8, 16),
                          memory=(0, 100), clock=work.clock)
    assert c.batch_size == 4
    with pytest.raises(LayercritError, match="holds no batch.*max_memory"):
        choose_batch_size(work, n_images=100, budget_bytes=50, memory=(0, 100), clock=work.clock)


def test_candidates_capped_at_the_number_of_images():
    work = FakeWork({8: 10, 16: 20, 20: 40})
    c = choose_batch_size(work, n_images=20, budget_bytes=10**9, candidates=(8, 16, 32, 64),
                          memory=(0, 1), clock=work.clock, max_seconds=1e9)
    assert c.batch_size == 20 and set(c.images_per_s) == {8, 16, 20}


def test_time_limit_stops_the_search():
    work = FakeWork({8: 1, 16: 2, 32: 4})  # 3 calls of 8 images = 24 s
    c = choose_batch_size(work, n_images=100, budget_bytes=10**9, candidates=(8, 16, 32), memory=(0, 1),
                          clock=work.clock, max_seconds=30)
    assert c.batch_size == 8 and set(c.images_per_s) == {8}


# --- memory counting ---------------------------------------------------------------------------------

def test_peak_bytes_counts_live_tensors():
    def work():
        a = torch.ones(1000, dtype=torch.float32)  # 4000 B
        b = torch.ones(500, dtype=torch.float64)  # 4000 B, both alive
        del a
        c = torch.ones(250)  # 1000 B: a's memory is free again
        return b.sum() + c.sum()

    assert 8000 <= peak_bytes(work) < 9000


def test_estimate_bytes_per_image_of_a_conv_net():
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1)).eval()
    images = torch.rand(4, 3, 32, 32)
    with torch.inference_mode():
        fixed, per_image = estimate_bytes(lambda b: net(images[:b]), 4)
    one_activation = 16 * 32 * 32 * 4
    assert one_activation <= per_image <= 6 * one_activation


def test_auto_batch_size_on_the_engine(tiny_model, tiny_data):
    model, _ = tiny_model
    from layercrit.models import NormalizedModel

    net = NormalizedModel(model, None, None)
    for engine in ("cached", "naive"):
        c = auto_batch_size(net, tiny_data.images, ["model.conv1", "model.conv2", "model.fc"], engine=engine,
                            candidates=(8, 16, 48), max_seconds=30)
        assert isinstance(c, BatchChoice) and c.batch_size in (8, 16, 48) and c.bytes_per_image > 0
        json.dumps(c.record())  # goes into the run's config
    small = auto_batch_size(net, tiny_data.images, ["model.conv1"], candidates=(8, 16, 48), max_memory="1M")
    assert small.budget_bytes == 2**20 and "max_memory" in small.budget
    assert all(p.requires_grad for p in model.parameters())  # the model is left as it was


# --- fast bf16 ------------------------------------------------------------------------------------------

def _flags(monkeypatch, flags):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))


def test_bf16_fast_on_cpus(monkeypatch):
    for flags, fast in (({"avx512_bf16", "avx2"}, True), ({"amx_bf16", "amx_tile"}, True),
                        ({"avx2", "avx512f"}, False)):
        _flags(monkeypatch, flags)
        assert hardware.bf16_fast("cpu") is fast
        note = hardware.precision_speed_note("bf16", "cpu")
        assert (note is None) is fast
        if note:
            assert "\n" not in note and "AVX512-BF16" in note and "{precision} fp32" in note
    _flags(monkeypatch, set())  # cannot tell: no warning on a guess
    assert hardware.bf16_fast("cpu")
    assert hardware.precision_speed_note("fp32", "cpu") is None


def test_bf16_fast_on_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 5))
    note = hardware.precision_speed_note("bf16", "cuda")
    assert note and "7.5 < 8.0" in note and "Tesla T4" in note
    assert hardware.precision_speed_note("fp16", "cuda") is None
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (8, 0))
    assert hardware.bf16_fast("cuda")


def test_warn_if_slow_says_it_once(monkeypatch, caplog):
    _flags(monkeypatch, {"avx2"})
    hardware._warn_once.cache_clear()
    with caplog.at_level("WARNING", logger="layercrit"):
        for _ in range(3):
            hardware.warn_if_slow("bf16", "cpu")
        hardware.warn_if_slow("fp32", "cpu")
    assert len(caplog.records) == 1 and "bf16" in caplog.records[0].getMessage()


def test_cpu_flags_reads_this_machine():
    flags = hardware.cpu_flags()
    assert isinstance(flags, frozenset)
    assert hardware.cpu_bf16_kind() in ("amx", "avx512_bf16", "none")


# --- results do not depend on the batch size ----------------------------------------------------------------

METRIC_COLUMNS = ["criticality", "top1_acc", "top5_acc", "loss", "pred_cos_sim", "pred_l1_err", "pred_l2_err",
                  "pred_ce_loss", "pred_kl_div", "pred_agreement", "recovered_acc"]


def _bundle(tiny_model):
    from layercrit.models import ModelBundle, NormalizedModel

    model, factory = tiny_model
    return ModelBundle.from_module(NormalizedModel(model, None, None), factory)


def test_same_rows_at_two_batch_sizes(tiny_model, tiny_data):
    """The batch size only regroups images: every metric within 1e-5 (float rounding), both engines."""
    import layercrit as lc

    bundle = _bundle(tiny_model)
    kw = dict(samples=None, trials=2, reset=["random", "zero"], progress=False)
    for engine in ("cached", "naive"):
        a = lc.measure(bundle, tiny_data, batch_size=5, engine=engine, **kw).set_index(["layer", "reset", "trial"])
        b = lc.measure(bundle, tiny_data, batch_size=48, engine=engine, **kw).set_index(["layer", "reset", "trial"])
        assert len(a) == 9 and list(a.index) == list(b.index)
        diff = (a[METRIC_COLUMNS] - b[METRIC_COLUMNS]).abs().to_numpy().max()
        assert diff <= 1e-5, (engine, diff)
        assert (a.n_samples == 48).all() and (b.n_samples == 48).all()


# --- --batch-size auto through measure() and the command line -------------------------------------------------

def test_auto_batch_size_in_measure_is_recorded_and_changes_nothing(tmp_path, tiny_model, tiny_data):
    import layercrit as lc
    from layercrit.store import ResultStore

    bundle = _bundle(tiny_model)
    kw = dict(samples=None, trials=1, progress=False)
    db = tmp_path / "auto.db"
    auto = lc.measure(bundle, tiny_data, batch_size="auto", max_memory="256M", store=db, **kw)
    fixed = lc.measure(bundle, tiny_data, batch_size=48, **kw)
    diff = (auto.set_index("layer")[METRIC_COLUMNS] - fixed.set_index("layer")[METRIC_COLUMNS]).abs().to_numpy().max()
    assert diff <= 1e-5
    with ResultStore(db) as store:
        config = json.loads(store.runs().iloc[0]["config"])
    assert isinstance(config["batch_size"], int) and config["batch_size"] >= 1
    chosen = config["batch_size_auto"]
    assert chosen["batch_size"] == config["batch_size"] and chosen["budget_bytes"] == 256 * 2**20
    assert str(config["batch_size"]) in chosen["images_per_s"] and chosen["bytes_per_image"] > 0


def test_measure_config_batch_size_auto_and_max_memory():
    from layercrit.engine import MeasureConfig
    from layercrit.errors import ConfigError

    assert MeasureConfig(batch_size="AUTO").batch_size == "auto"
    c = MeasureConfig(batch_size="auto", max_memory="2G")
    assert c.max_memory == 2 * 2**30 and MeasureConfig(batch_size="auto", max_memory="25%").max_memory == "25%"
    with pytest.raises(ConfigError, match="max_memory.*batch_size auto"):
        MeasureConfig(max_memory="2G")
    with pytest.raises(ConfigError, match="max_memory"):
        MeasureConfig(batch_size="auto", max_memory="plenty")
    with pytest.raises(ConfigError, match="batch_size"):
        MeasureConfig(batch_size="biggest")


def test_cli_max_memory_without_auto_is_one_error_line(tmp_path):
    from conftest import run_cli

    proc = run_cli("measure", "--model", "arch:cifar_resnet50", "--data", str(tmp_path), "--db",
                   str(tmp_path / "x.db"), "--max-memory", "2G")
    assert proc.returncode == 2 and "--max-memory" in proc.stderr and "--batch-size auto" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.db").exists()


def test_resumed_auto_run_keeps_the_interrupted_runs_batch_size(tmp_path, monkeypatch, tiny_model, tiny_data, caplog):
    """Saved running sums are on the interrupted run's batch grid: a rerun with auto continues on it."""
    import layercrit as lc
    from layercrit.engine import metrics

    bundle = _bundle(tiny_model)
    kw = dict(samples=None, trials=2, seed=4, progress=False)
    clean = lc.measure(bundle, tiny_data, batch_size=8, **kw)
    calls = {"n": 0}
    real_update = metrics.ResetMetrics.update

    def interrupted_update(self, *args):
        calls["n"] += 1
        if calls["n"] == 10:  # second batch, mid-way through the jobs
            raise KeyboardInterrupt
        return real_update(self, *args)

    monkeypatch.setattr(metrics.ResetMetrics, "update", interrupted_update)
    db = tmp_path / "s.db"
    with pytest.raises(KeyboardInterrupt):
        lc.measure(bundle, tiny_data, store=db, batch_size=8, **kw)
    monkeypatch.setattr(metrics.ResetMetrics, "update", real_update)
    monkeypatch.setattr(batching, "CPU_CANDIDATES", (16,))  # auto alone would choose 16 here
    with caplog.at_level("INFO", logger="layercrit"):
        resumed = lc.measure(bundle, tiny_data, store=db, batch_size="auto", **kw)
    assert any("resuming with batch size 8" in r.getMessage() for r in caplog.records)
    cols = ["layer", "reset", "trial", *METRIC_COLUMNS]
    assert resumed[cols].equals(clean[cols])  # continued on the same grid: identical numbers


def test_resumed_batch_size_rules():
    import pandas as pd

    runs = pd.DataFrame({"run_id": [1], "config": [json.dumps({"batch_size": 64})]})
    auto = {"fixed_bytes": 0, "bytes_per_image": 10, "budget_bytes": 10_000}
    record = {"batch_size": 32, "batch_size_auto": auto}
    assert batching.resumed_batch_size(record, runs, 1, resumable=True) == 64
    assert batching.resumed_batch_size(record, runs, 1, resumable=False) is None  # nothing saved mid-way
    assert batching.resumed_batch_size({"batch_size": 32}, runs, 1, resumable=True) is None  # not auto
    small = {**record, "batch_size_auto": {**auto, "budget_bytes": 700}}  # 64 images no longer fit
    assert batching.resumed_batch_size(small, runs, 1, resumable=True) is None
