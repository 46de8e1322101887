"""Training-method lab: every method end to end on a tiny generated image folder, resume, PGD, errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import run_cli
from layercrit import LayercritError, create_model
from layercrit.models import NormalizedModel, load_state_dict
from layercrit.train import list_methods, make_config, parse_eps, pgd, train

CLASSES = 3


def make_image_folder(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """32x32 PNGs whose class decides which colour channel is bright (learnable in a few steps)."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    for split, n in per_class.items():
        for c in range(CLASSES):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = 0.4 * torch.rand(3, 32, 32, generator=g)
                img[c] += 0.6
                Image.fromarray(img.mul(255).byte().permute(1, 2, 0).numpy()).save(d / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("tiny_cifar"), {"train": 32, "test": 8})


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: steadier timing on a shared 2-core machine (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


FAST = dict(epochs=1, batch_size=32, robust_eval_samples=8, robust_eval_steps=2, probe_epochs=1)


def _fast(method: str) -> dict:
    kw = dict(FAST)
    if method != "simclr":
        kw.pop("probe_epochs")
    return kw


@pytest.mark.parametrize("method", list_methods())
def test_each_method_writes_weights_init_and_sidecar(method, tiny_cifar, tmp_path):
    out = tmp_path / method
    side = train(method, tiny_cifar, out, progress=False, **_fast(method))
    assert sorted(p.name for p in out.iterdir()) == ["init.safetensors", "model.safetensors", "run.json"]
    assert json.loads((out / "run.json").read_text()) == side
    assert side["method"] == method and side["seed"] == 0 and side["epochs"] >= 1
    assert side["hyperparameters"]["batch_size"] == 32 and side["hyperparameters"]["method"] == method
    assert side["images_seen"] >= 32 * 3 and side["train_seconds"] > 0
    assert len(side["data"]["train_fingerprint"]) == 64 and side["data"]["train_images"] == 96
    assert 0 <= side["clean_test_acc"] <= 100 and side["data"]["test_images"] == 24
    assert "torch" in side["versions"] and "git_commit" in side
    assert ("robust_test_acc" in side) == method.startswith("pgd")
    # both files load as a registered architecture; init and final differ where training touched them
    final = create_model(f"file:{out / 'model.safetensors'}", arch="cifar_resnet50", num_classes=CLASSES)
    assert final.checksum() == side["weights_sha256"]
    init, trained = load_state_dict(out / "init.safetensors"), load_state_dict(out / "model.safetensors")
    assert not torch.equal(init["fc.weight"], trained["fc.weight"])
    backbone_same = torch.equal(init["conv1.weight"], trained["conv1.weight"])
    assert backbone_same == (method == "frozen-random")  # only fc trains in the control
    if method == "frozen-random":
        assert all(torch.equal(init[k], trained[k]) for k in init
                   if "running" not in k and "num_batches" not in k and not k.startswith("fc."))
    with torch.no_grad():
        assert final.model(torch.rand(2, 3, 32, 32)).shape == (2, CLASSES)


def test_resume_after_interruption_equals_uninterrupted_run(tiny_cifar, tmp_path, monkeypatch):
    clock = iter(f"2026-12-07T00:00:{s:02d}+00:00" for s in range(60))  # every call a new time
    monkeypatch.setattr("layercrit.train.run.utc_now", lambda: next(clock))
    # improved: EMA, MixUp/CutMix, TrivialAugment and warm-up all carry state across the epoch boundary
    kw = dict(epochs=2, batch_size=32, train_samples=64)
    full = train("improved", tiny_cifar, tmp_path / "full", progress=False, **kw)
    part = train("improved", tiny_cifar, tmp_path / "resumed", progress=False, stop_after_epoch=1, **kw)
    assert part == {"interrupted_after_epoch": 1}
    assert (tmp_path / "resumed" / "resume.pt").is_file() and not (tmp_path / "resumed" / "run.json").exists()
    part_started = json.loads(torch.load(tmp_path / "resumed" / "resume.pt", weights_only=True)["meta"])["state"][
        "started_at"]
    resumed = train("improved", tiny_cifar, tmp_path / "resumed", progress=False, **kw)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]  # epoch 1 was not trained again
    assert resumed["history"][0] == {**full["history"][0], "seconds": resumed["history"][0]["seconds"],
                                     "images_per_s": resumed["history"][0]["images_per_s"]}
    assert resumed["weights_sha256"] == full["weights_sha256"]  # same seed -> same weights
    assert not (tmp_path / "resumed" / "resume.pt").exists()
    # the start is the first start, kept across the resume (claims compare it with their file's commit)
    assert resumed["started_at"] == part_started != resumed["finished_at"]
    assert resumed["start_git_commit"] == resumed["git_commit"]  # both from this checkout (or both None)
    # a finished run is returned as it is; other settings in the same folder are refused
    assert train("improved", tiny_cifar, tmp_path / "full", progress=False, **kw) == full
    with pytest.raises(LayercritError, match="other settings"):
        train("improved", tiny_cifar, tmp_path / "full", progress=False, **{**kw, "lr": 0.05})
    other_seed = train("standard", tiny_cifar, tmp_path / "s1", progress=False, seed=1, epochs=1, batch_size=32)
    same_seed = train("standard", tiny_cifar, tmp_path / "s0", progress=False, seed=0, epochs=1, batch_size=32)
    assert other_seed["weights_sha256"] != same_seed["weights_sha256"]


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, CLASSES)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def test_pgd_increases_the_loss_of_a_trained_model_within_budget():
    torch.manual_seed(0)
    labels = torch.arange(60) % CLASSES
    x = 0.4 * torch.rand(60, 3, 16, 16)
    x[torch.arange(60), labels] += 0.5
    model = NormalizedModel(_Tiny(), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(model(x), labels).backward()
        opt.step()
    model.eval()
    opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        clean = F.cross_entropy(model(x), labels).item()
        assert (model(x).argmax(1) == labels).float().mean() > 0.9  # it did learn
    for norm, eps in (("linf", 8 / 255), ("l2", 0.5)):
        x_adv = pgd(model, x, labels, norm=norm, eps=eps, steps=10)
        with torch.no_grad():
            adv = F.cross_entropy(model(x_adv), labels).item()
        assert adv > clean * 1.5, (norm, clean, adv)
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        delta = (x_adv - x).flatten(1)
        size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        assert size.max() <= eps + 1e-5
        assert all(p.grad is None for p in model.parameters())  # the attack leaves parameter grads alone
    # a random point in the ball barely moves the loss: the gain comes from the gradient steps
    noise = pgd(model, x, labels, norm="linf", eps=8 / 255, steps=0)
    with torch.no_grad():
        assert F.cross_entropy(model(noise), labels).item() < adv


def test_eps_parsing_and_config_errors():
    assert parse_eps("2/255") == pytest.approx(2 / 255) and parse_eps("0.5") == 0.5 and parse_eps(0.0078) == 0.0078
    assert make_config("pgd-linf", eps="8/255").eps == pytest.approx(8 / 255)
    assert make_config("improved").ema_decay > 0 and make_config("improved").label_smoothing == 0.1
    for call, match in [(lambda: make_config("sgd-magic"), "unknown training method 'sgd-magic'"),
                        (lambda: make_config("standard", learning_rate=0.1), "unknown hyperparameter"),
                        (lambda: make_config("standard", epochs="ten"), "epochs"),
                        (lambda: make_config("pgd-linf", eps="8"), "write 8/255"),
                        (lambda: make_config("pgd-l2", eps="abc"), "not a number"),
                        (lambda: make_config("standard", augment="cutout"), "unknown augmentation")]:
        with pytest.raises(LayercritError, match=match):
            call()


def test_cli_train_and_its_errors(tiny_cifar, tmp_path):
    out = tmp_path / "cli"
    ok = run_cli("train", "--method", "pgd-l2", "--eps", "0.25", "--data", str(tiny_cifar), "--out", str(out),
                 "--epochs", "1", "--batch-size", "48", "--robust-eval-samples", "8", "--robust-eval-steps", "2",
                 "--threads", "1", "--no-progress")
    assert ok.returncode == 0, ok.stderr
    assert "clean test accuracy" in ok.stdout and "robust" in ok.stdout
    side = json.loads((out / "run.json").read_text())
    assert side["hyperparameters"]["eps"] == 0.25 and side["robust_eval"]["eps"] == 0.25
    for args, match in [(["--method", "nope", "--out", str(tmp_path / "x")], "unknown training method 'nope'"),
                        (["--method", "standard", "--out", str(tmp_path / "x"), "--data", str(tmp_path / "none")],
                         "training data not found"),
                        (["--method", "standard", "--out", str(tmp_path / "x"), "--data", str(tmp_path)],
                         "no train/ folder")]:
        bad = run_cli("train", *args)
        assert bad.returncode == 2 and bad.stderr.startswith("layercrit: error: ") and match in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_runs_recorded_before_a_new_hyperparameter_still_match():
    cfg = make_config("standard", epochs=2)
    stored = cfg.to_dict()
    del stored["init_from"]  # a run.json written before fine-tuning existed
    assert cfg.same_as(stored)
    assert not cfg.same_as({**stored, "epochs": 3})
    assert not make_config("standard", epochs=2, init_from="w.safetensors").same_as(stored)


def test_snapshot_epochs_are_written_evaluated_and_survive_a_resume(tiny_cifar, tmp_path):
    kw = dict(epochs=3, batch_size=32, save_epochs=[1, 2])
    full = train("standard", tiny_cifar, tmp_path / "full", progress=False, **kw)
    files = sorted(p.name for p in (tmp_path / "full").iterdir())
    assert files == ["epoch-1.safetensors", "epoch-2.safetensors", "init.safetensors", "model.safetensors", "run.json"]
    assert [s["epoch"] for s in full["snapshots"]] == [1, 2]
    for snap in full["snapshots"]:
        model = create_model(f"file:{tmp_path / 'full' / snap['file']}")  # self-describing: no --arch needed
        assert model.checksum() == snap["weights_sha256"] and 0 <= snap["clean_test_acc"] <= 100
    assert len({s["weights_sha256"] for s in full["snapshots"]} | {full["weights_sha256"]}) == 3
    # snapshots leave the run's own randomness alone: the final weights equal a run without them
    plain = train("standard", tiny_cifar, tmp_path / "plain", progress=False, epochs=3, batch_size=32)
    assert plain["weights_sha256"] == full["weights_sha256"]
    # interrupted after epoch 1 and resumed: the same snapshots and the same final weights
    train("standard", tiny_cifar, tmp_path / "resumed", progress=False, stop_after_epoch=1, **kw)
    resumed = train("standard", tiny_cifar, tmp_path / "resumed", progress=False, **kw)
    assert [s["weights_sha256"] for s in resumed["snapshots"]] == [s["weights_sha256"] for s in full["snapshots"]]
    assert resumed["weights_sha256"] == full["weights_sha256"]
    with pytest.raises(LayercritError, match="beyond the run's 3 epochs"):
        train("standard", tiny_cifar, tmp_path / "late", progress=False, epochs=3, save_epochs="2,4")
    assert not (tmp_path / "late").exists()


def test_contrastive_snapshot_carries_a_trained_probe(tiny_cifar, tmp_path):
    side = train("simclr", tiny_cifar, tmp_path / "s", progress=False, epochs=2, batch_size=32, probe_epochs=1,
                 save_epochs=[1])
    init, snap = load_state_dict(tmp_path / "s" / "init.safetensors"), load_state_dict(tmp_path / "s" / "epoch-1.safetensors")
    assert not torch.equal(init["fc.weight"], snap["fc.weight"])  # the probe was fitted on epoch-1 features
    assert not torch.equal(init["conv1.weight"], snap["conv1.weight"])  # and the backbone had trained
    assert side["snapshots"][0]["epoch"] == 1


def test_bf16_training_is_deterministic_and_leaves_global_state_alone(tiny_cifar, tmp_path):
    torch.manual_seed(123)
    rng_before, threads_before = torch.get_rng_state(), torch.get_num_threads()
    kw = dict(epochs=1, batch_size=32, precision="bf16")
    a = train("standard", tiny_cifar, tmp_path / "a", progress=False, threads=2, **kw)
    b = train("standard", tiny_cifar, tmp_path / "b", progress=False, threads=2, **kw)
    fp32 = train("standard", tiny_cifar, tmp_path / "c", progress=False, threads=2, epochs=1, batch_size=32)
    assert a["weights_sha256"] == b["weights_sha256"] != fp32["weights_sha256"]
    assert a["hyperparameters"]["precision"] == "bf16" and a["torch_threads"] == 2
    assert torch.equal(torch.get_rng_state(), rng_before) and torch.get_num_threads() == threads_before
    with pytest.raises(LayercritError, match="precision"):
        make_config("standard", precision="fp8")
    with pytest.raises(LayercritError, match="threads must be at least 1"):
        train("standard", tiny_cifar, tmp_path / "d", threads=-2, **kw)


def test_a_diverging_loss_stops_training_with_one_clear_error(tiny_cifar, tmp_path):
    with pytest.raises(LayercritError, match="training loss became (nan|inf)"):
        train("standard", tiny_cifar, tmp_path / "x", progress=False, epochs=1, batch_size=32, lr=1e30)
    assert not (tmp_path / "x" / "run.json").exists() and not (tmp_path / "x" / "model.safetensors").exists()
    with pytest.raises(LayercritError, match="lr must be a positive number"):
        make_config("standard", lr=float("nan"))


def test_bf16_training_on_a_cpu_without_native_bf16_warns(tiny_cifar, tmp_path, monkeypatch, caplog):
    # on an AVX2-only CPU (e.g. an AMD EPYC without AVX512-BF16) bf16 autocast is emulated: ~8x slower than fp32
    from layercrit.engine.hardware import _warn_once

    _warn_once.cache_clear()  # the warning is once per process: an earlier bf16 test may have given it
    monkeypatch.setattr("layercrit.engine.hardware.cpu_flags", lambda: frozenset({"avx2"}))
    with caplog.at_level("WARNING", logger="layercrit"):
        train("standard", tiny_cifar, tmp_path / "bf16", progress=False, epochs=1, batch_size=32, train_samples=32,
              precision="bf16")
    assert [r for r in caplog.records if "bf16" in r.getMessage() and "slower than fp32" in r.getMessage()]
    caplog.clear()
    _warn_once.cache_clear()
    monkeypatch.setattr("layercrit.engine.hardware.cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    with caplog.at_level("WARNING", logger="layercrit"):
        train("standard", tiny_cifar, tmp_path / "bf16-fast", progress=False, epochs=1, batch_size=32,
              train_samples=32, precision="bf16")
    assert not [r for r in caplog.records if "slower than fp32" in r.getMessage()]
