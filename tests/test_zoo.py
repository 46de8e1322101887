"""The study's model zoo: registry facts, every checkpoint layout end to end, strictness, safety, CLI.

Nothing is downloaded: each layout is proven on a random ResNet-50 state dict written the way the
real files are (with their extra keys), loaded through ``zoo:<id>`` with the checkpoint given.
"""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torchvision

import layercrit as lc
from layercrit.errors import LayercritError
from layercrit.models import weights_checksum
from layercrit.zoo import CATEGORIES, get_zoo_model, list_zoo_models, register_zoo_model, zoo_metadata
from layercrit.zoo import fetch as zoo_fetch
from layercrit.zoo import registry as zoo_registry
from layercrit.zoo.layouts import get_layout, read_checkpoint

from conftest import ROOT, run_cli

ZOO_MD = ROOT.parent / "shared" / "reference" / "ZOO.md"
EXPECTED_COUNTS = {"baseline": 1, "adversarial training": 15, "augmentation": 18,
                   "self-supervised (linear probe)": 6, "improved training recipe": 10,
                   "control: frozen random backbone": 1}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def src() -> dict[str, torch.Tensor]:
    """A torchvision ResNet-50 state dict where every parameter and buffer is random (so a fresh
    initialization can never match it by accident)."""
    with torch.device("meta"):
        shapes = torchvision.models.resnet50().state_dict()
    g = torch.Generator().manual_seed(1234)
    return {k: torch.randn(v.shape, generator=g) if v.is_floating_point()
            else torch.randint(1, 10_000, v.shape, generator=g) for k, v in shapes.items()}


def _prefixed(state, prefix):
    return {prefix + k: v for k, v in state.items()}


def _backbone(state):
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def _head_file(state):
    """DINO's / SwAV's linear-probe file: a DDP-wrapped nn.Linear called 'linear', plus training state."""
    return {"epoch": 100, "best_acc": 75.3, "state_dict": {"module.linear.weight": state["fc.weight"],
                                                           "module.linear.bias": state["fc.bias"]},
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]}}


def _tf_name(key: str) -> str:
    """torchvision name -> SimCLRv2 PyTorch-conversion name (Separius/SimCLRv2-Pytorch's module tree)."""
    if key.startswith("conv1."):
        return "net.0.0." + key[len("conv1."):]
    if key.startswith("bn1."):
        return "net.0.1.0." + key[len("bn1."):]
    if key.startswith("fc."):
        return key
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(conv|bn)(\d)\.(\w+)", key)
    if m:
        s, b, kind, i, p = m.groups()
        k = 2 * (int(i) - 1) + (kind == "bn")
        return f"net.{s}.blocks.{b}.net.{k}." + ("0." if kind == "bn" else "") + p
    m = re.fullmatch(r"layer(\d)\.(\d+)\.downsample\.([01])\.(\w+)", key)
    s, b, i, p = m.groups()
    return f"net.{s}.blocks.{b}." + ("projection.shortcut." if i == "0" else "projection.bn.0.") + p


def _write(path: Path, obj) -> str:
    torch.save(obj, path)
    return str(path)


def write_layout(layout: str, state: dict, d: Path) -> str:
    """Write ``state`` the way the real files of ``layout`` are written; returns the --checkpoint value."""
    d.mkdir(parents=True, exist_ok=True)
    if layout == "torchvision":
        return _write(d / "resnet50.pth", dict(state))
    if layout == "madrylab":
        extra = {"module.normalizer.new_mean": torch.rand(3, 1, 1), "module.normalizer.new_std": torch.rand(3, 1, 1),
                 "module.attacker.normalize.new_mean": torch.rand(3, 1, 1),
                 "module.attacker.normalize.new_std": torch.rand(3, 1, 1),
                 **_prefixed({k: state[k] for k in ("conv1.weight", "bn1.running_mean", "fc.bias")},
                             "module.attacker.model.")}
        return _write(d / "resnet50_linf_eps4.0.ckpt",
                      {"model": {**_prefixed(state, "module.model."), **extra}, "epoch": 90, "schedule": None})
    if layout == "state_dict":
        return _write(d / "linear.pth.tar", {"epoch": 100, "arch": "resnet50", "best_acc1": torch.tensor(74.6),
                                             "state_dict": _prefixed(state, "module."), "optimizer": {"state": {}}})
    if layout == "generic":
        return _write(d / "augmix.pth", {"online_backbone": _prefixed(state, "module."), "epoch": 180})
    if layout == "module_model":
        return _write(d / "diffusionnoise.pth", {"model": _prefixed(state, "module."), "epoch": 90})
    if layout == "tsbias":
        aux = {f"module.{n}.aux_bn.{p}": torch.rand(3) for n in ("bn1", "layer1.0.bn1", "layer4.2.bn3")
               for p in ("weight", "bias", "running_mean", "running_var")}
        return _write(d / "tsbias.pth.tar", {"epoch": 90, "arch": "resnet50", "best_acc1": 76.9,
                                             "state_dict": {**_prefixed(state, "module."), **aux}})
    if layout == "dino":
        return ",".join([_write(d / "dino_resnet50_pretrain.pth", _backbone(state)),
                         _write(d / "dino_resnet50_linearweights.pth", _head_file(state))])
    if layout == "swav":
        heads = {"module.projection_head.0.weight": torch.rand(16, 2048), "module.projection_head.0.bias": torch.rand(16),
                 "module.projection_head.1.running_mean": torch.rand(16),
                 "module.projection_head.1.num_batches_tracked": torch.tensor(5),
                 "module.prototypes.weight": torch.rand(30, 16)}
        return ",".join([_write(d / "swav_800ep_pretrain.pth.tar", {**_prefixed(_backbone(state), "module."), **heads}),
                         _write(d / "swav_800ep_eval_linear.pth.tar", _head_file(state))])
    if layout == "simclrv2":
        contrastive = {"layers.0.weight": torch.rand(8, 2048), "layers.1.running_mean": torch.rand(8)}
        return _write(d / "r50_1x_sk0.pth", {"resnet": {_tf_name(k): v for k, v in state.items()},
                                             "head": contrastive})
    raise AssertionError(f"no writer for layout {layout}")


# One zoo model per layout (plus a timm-sourced one given as .safetensors, as timm's hub files are).
LAYOUT_CASES = {
    "torchvision": "tv2_resnet50", "madrylab": "robust_resnet50_linf_eps4.0", "state_dict": "resnet50_moco_v3_1000ep",
    "generic": "resnet50_augmix_180ep", "module_model": "resnet50_diffusionnoise_fixed_nonoise",
    "tsbias": "resnet50_tsbias_debiased", "dino": "resnet50_dino", "swav": "resnet50_swav",
    "simclrv2": "resnet50_simclrv2",
}


def assert_same_weights(net: torch.nn.Module, state: dict) -> None:
    got = net.state_dict()
    assert list(got) == list(state)
    differ = [k for k in state if got[k].dtype != state[k].dtype or not torch.equal(got[k], state[k])]
    assert not differ, f"not loaded exactly: {differ[:5]}"


def test_every_layout_of_the_registry_has_a_round_trip_case():
    assert {m.layout for m in list_zoo_models()} == set(LAYOUT_CASES)
    for layout, model_id in LAYOUT_CASES.items():
        assert get_zoo_model(model_id).layout == layout


@pytest.mark.parametrize("layout", sorted(LAYOUT_CASES))
def test_layout_loads_every_parameter_and_buffer_exactly(layout, src, tmp_path):
    model_id = LAYOUT_CASES[layout]
    checkpoint = write_layout(layout, src, tmp_path)
    bundle = lc.create_model(f"zoo:{model_id}", checkpoint=checkpoint)
    assert_same_weights(bundle.network, src)
    entry = get_zoo_model(model_id)
    assert (bundle.model_id, bundle.category, bundle.arch) == (model_id, entry.category, "torchvision/resnet50")
    assert isinstance(bundle.network, torchvision.models.ResNet) and not bundle.network.training
    seen = []
    bundle.network.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        bundle.model(x)
    if entry.normalized:  # ImageNet mean/std inside the wrapper
        mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        assert torch.allclose(seen[0], (x - mean) / std)
    else:  # SimCLRv2 and the diffusion-noise model take raw [0, 1] input
        assert not bundle.model.normalize and torch.equal(seen[0], x)


def test_timm_model_from_a_safetensors_file(src, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file(src, str(path))
    bundle = lc.create_model("zoo:resnet50.a1_in1k", checkpoint=str(path), name="a1")
    assert_same_weights(bundle.network, src)
    assert (bundle.model_id, bundle.category) == ("a1", "improved training recipe")
    # the random reset draws from torchvision's own ResNet-50 initializer, as for every zoo model
    fresh = bundle.factory()
    assert type(fresh) is torchvision.models.ResNet and bundle.arch == "torchvision/resnet50"
    assert not torch.equal(fresh.conv1.weight, bundle.network.conv1.weight)


def test_split_files_from_a_folder_under_their_cache_names(src, tmp_path):
    write_layout("dino", src, tmp_path)  # writes the two files under the URLs' names
    assert_same_weights(lc.create_model("zoo:resnet50_dino", checkpoint=str(tmp_path)).network, src)
    with pytest.raises(LayercritError, match="needs 2 checkpoint files"):
        lc.create_model("zoo:resnet50_dino", checkpoint=str(tmp_path / "dino_resnet50_pretrain.pth"))


def test_missing_key_fails_naming_it(src, tmp_path):
    state = {k: v for k, v in src.items() if k != "layer3.2.bn2.running_var"}
    path = write_layout("madrylab", state, tmp_path)
    with pytest.raises(LayercritError, match=r"missing 1: layer3\.2\.bn2\.running_var") as e:
        lc.create_model("zoo:robust_resnet50_linf_eps4.0", checkpoint=path)
    assert "\n" not in str(e.value) and "robust_resnet50_linf_eps4.0" in str(e.value)


def test_extra_key_fails_naming_it(src, tmp_path):
    path = write_layout("generic", {**src, "extra_head.weight": torch.rand(3)}, tmp_path)
    with pytest.raises(LayercritError, match=r"unexpected 1: extra_head\.weight"):
        lc.create_model("zoo:resnet50_augmix_180ep", checkpoint=path)


def test_undocumented_keys_are_never_dropped():
    # aux_bn is dropped only by the tsbias layout; madrylab keeps anything outside attacker/normalizer
    tiny = {"module.model.conv1.weight": torch.rand(1), "module.bn1.aux_bn.weight": torch.rand(1),
            "module.odd.weight": torch.rand(1), "module.attacker.model.conv1.weight": torch.rand(1)}
    state, dropped = get_layout("madrylab").convert({"model": tiny})
    assert set(state) == {"conv1.weight", "module.bn1.aux_bn.weight", "module.odd.weight"}
    assert dropped == ["module.attacker.model.conv1.weight"]
    state, dropped = get_layout("generic").convert({"state_dict": {"bn1.aux_bn.weight": torch.rand(1)}})
    assert set(state) == {"bn1.aux_bn.weight"} and dropped == []
    with pytest.raises(LayercritError, match="both hold fc.bias, fc.weight"):  # a backbone that carries a head
        get_layout("dino").convert({"fc.weight": torch.rand(1), "fc.bias": torch.rand(1)},
                                   {"state_dict": {"module.linear.weight": torch.rand(1),
                                                   "module.linear.bias": torch.rand(1)}})
    with pytest.raises(LayercritError, match="no dict under key 'resnet'"):
        get_layout("simclrv2").convert({"state_dict": {}})


class _Payload:
    """Unpickling this runs open(marker, 'w'), i.e. it creates a file: the stand-in for malicious code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = _write(tmp_path / "evil.pth", {"state_dict": {"conv1.weight": torch.zeros(1)}, "x": _Payload(str(marker))})
    with pytest.raises(LayercritError, match="refused for safety") as e:
        lc.create_model("zoo:resnet50_moco_v3_1000ep", checkpoint=str(path))
    assert "open" in str(e.value) and not marker.exists()
    proc = run_cli("zoo", "verify", "resnet50_moco_v3_1000ep", "--file", str(path))
    assert proc.returncode == 2 and "refused for safety" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is live: an unsafe load does create the file
    assert marker.exists()


class _Meta:
    def __init__(self, note):
        self.note = note


def test_layout_allowlist_admits_exactly_its_classes_and_only_for_that_load(tmp_path):
    path = _write(tmp_path / "meta.pth", {"meta": _Meta("hi"), "state_dict": {"w": torch.ones(2)}})
    before = list(torch.serialization.get_safe_globals())
    obj = read_checkpoint(path, safe_globals=(_Meta,))
    assert isinstance(obj["meta"], _Meta) and obj["meta"].note == "hi" and torch.equal(obj["state_dict"]["w"], torch.ones(2))
    assert list(torch.serialization.get_safe_globals()) == before  # scoped, not global
    with pytest.raises(LayercritError, match=r"it holds .*_Meta\b.*refused for safety"):
        read_checkpoint(path)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty zoo cache, and downloads that fail as they do offline."""
    monkeypatch.setenv("LAYERCRIT_CACHE", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(zoo_fetch, "_download_url", offline)
    monkeypatch.setattr(zoo_fetch, "_download_gdrive", offline)
    return tmp_path / "cache"


def test_cached_checkpoint_is_used_without_network(src, cache):
    entry = get_zoo_model("robust_resnet50_linf_eps4.0")
    target = cache / "zoo" / entry.id / "resnet50_linf_eps4.0.ckpt"
    write_layout("madrylab", src, target.parent)
    assert zoo_fetch.expected_paths(entry) == {"weights": target}
    assert_same_weights(lc.create_model("zoo:robust_resnet50_linf_eps4.0").network, src)
    listed = {r["model_id"]: r for r in json.loads(run_cli("zoo", "list", "--format", "json", check=True).stdout)}
    assert listed[entry.id]["cached"] and listed[entry.id]["files"]["weights"]["path"] == str(target)
    assert not listed["robust_resnet50_linf_eps8.0"]["cached"]


@pytest.mark.parametrize("model_id,where", [
    ("robust_resnet50_linf_eps4.0", "https://huggingface.co/madrylab/robust-imagenet-models/resolve/main/"
                                    "resnet50_linf_eps4.0.ckpt"),
    ("resnet50_tsbias_debiased", "1r-OSfTtrlFhB9GPiQXUE1h6cqosaBePw"),
])
def test_offline_fetch_is_one_line_naming_model_source_and_target(model_id, where, cache):
    entry = get_zoo_model(model_id)
    target = cache / "zoo" / model_id / entry.sources[0].filename
    for args in (("zoo", "fetch", model_id), ("layers", "--model", f"zoo:{model_id}")):
        proc = run_cli(*args)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("layercrit: error: could not download")
        assert model_id in lines[0] and where in lines[0] and str(target) in lines[0]
        assert "Traceback" not in proc.stderr
    assert not list(cache.rglob("*.ckpt*")) and not list(cache.rglob("*.pth*"))  # no partial file left behind


def test_gdown_failure_without_exception_is_reported(tmp_path, monkeypatch):
    import gdown

    monkeypatch.setenv("LAYERCRIT_CACHE", str(tmp_path))
    monkeypatch.setattr(gdown, "download", lambda *a, **k: None)  # what gdown returns when Drive refuses
    proc = run_cli("zoo", "fetch", "resnet50_noisymix")
    assert proc.returncode == 2 and "1Na79fzPZ0Azg01h6kGn1Xu5NoWOElSuG" in proc.stderr and "refused" in proc.stderr


def test_fetch_records_sha256_beside_the_file(cache, monkeypatch):
    payload = b"not really a checkpoint, but bytes to hash" * 1000

    def fake(url, dest, progress):
        assert dest.name.endswith(".part")  # complete files only ever appear under their final name
        dest.write_bytes(payload)

    monkeypatch.setattr(zoo_fetch, "_download_url", fake)
    proc = run_cli("zoo", "fetch", "resnet50_prime", "--no-progress", check=True)
    target = cache / "zoo" / "resnet50_prime" / "ResNet50_ImageNet_PRIME_noJSD.ckpt"
    sha = hashlib.sha256(payload).hexdigest()
    assert target.read_bytes() == payload and sha in proc.stdout
    record = json.loads(target.with_name(target.name + ".json").read_text())
    assert record["sha256"] == sha and record["size"] == len(payload) and "zenodo.org" in record["source"]
    listed = json.loads(run_cli("zoo", "list", "--category", "augmentation", "--format", "json", check=True).stdout)
    row = next(r for r in listed if r["model_id"] == "resnet50_prime")
    assert row["cached"] and row["files"]["weights"]["sha256"] == sha


def test_offline_timm_source_points_to_the_hub_file(cache, monkeypatch):
    import timm

    monkeypatch.setattr(timm, "create_model", lambda *a, **k: (_ for _ in ()).throw(OSError("no connection")))
    proc = run_cli("zoo", "fetch", "resnet50.a3_in1k")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "resnet50.a3_in1k" in proc.stderr and "https://huggingface.co/timm/resnet50.a3_in1k" in proc.stderr


def test_verify_exact_fit_and_misfit(src, tmp_path):
    path = write_layout("tsbias", src, tmp_path)
    proc = run_cli("zoo", "verify", "resnet50_tsbias_debiased", "--file", path, check=True)
    expected = weights_checksum(types.SimpleNamespace(state_dict=lambda: src))
    assert f"{len(src)} tensors loaded" in proc.stdout and "12 documented ignorable keys dropped" in proc.stdout
    assert f"weights sha256 {expected}" in proc.stdout
    wrong = run_cli("zoo", "verify", "robust_resnet50_l2_eps3", "--file", path)  # a file of another layout
    assert wrong.returncode == 2 and len(wrong.stderr.strip().splitlines()) == 1
    assert "no dict under key 'model'" in wrong.stderr and not wrong.stdout


def test_every_zoo_model_resolves_to_the_studys_54_layers():
    with torch.device("meta"):
        reference = [n for n, m in torchvision.models.resnet50().named_modules()
                     if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(reference) == 54
    found = {}
    for entry in list_zoo_models():
        get_layout(entry.layout)  # a converter exists for it
        key = (entry.arch, entry.num_classes)
        if key not in found:  # build each distinct architecture once, without weights
            net = lc.models.get_arch(entry.arch).build(num_classes=entry.num_classes)
            # the traced forward finds the same layers at any resolution; 64 px keeps the test fast
            found[key] = [(layer.name, layer.module_type) for layer in lc.discover_layers(net, 64)]
        assert [name for name, _ in found[key]] == reference, entry.id
    assert found and all(sum(t == "Conv2d" for _, t in v) == 53 for v in found.values())


def test_list_json_has_the_51_models_of_zoo_md():
    rows = json.loads(run_cli("zoo", "list", "--format", "json", check=True).stdout)
    assert len(rows) == 51 and len({r["model_id"] for r in rows}) == 51
    counts = {c: sum(r["category"] == c for r in rows) for c in CATEGORIES}
    assert counts == EXPECTED_COUNTS
    by_id = {r["model_id"]: r for r in rows}
    assert by_id["resnet50_swav"]["sources"][1] == {
        "kind": "url", "ref": "https://dl.fbaipublicfiles.com/deepcluster/swav_800ep_eval_linear.pth.tar", "role": "head"}
    assert not by_id["resnet50_simclrv2"]["normalized"] and by_id["tv_resnet50"]["normalized"]
    if ZOO_MD.is_file():  # the reference table itself, where the shared folder is present
        table = re.findall(r"^\| `([^`]+)` \| ([^|]+?) \| ([^|]+?) \|", ZOO_MD.read_text(), re.M)
        assert [(i, c) for i, c, _ in table] == [(r["model_id"], r["category"]) for r in rows]
        assert [None if a == "–" else float(a) for _, _, a in table] == [r["top1"] for r in rows]
    table = run_cli("zoo", "list", "--category", "adversarial training", check=True).stdout
    assert "robust_resnet50_linf_eps4.0" in table and "linf 4/255" in table and "tv_resnet50" not in table
    bad = run_cli("zoo", "list", "--category", "adversarial")
    assert bad.returncode == 2 and "'adversarial training'" in bad.stderr


def test_zoo_metadata_table():
    df = zoo_metadata()
    assert list(df.columns) == ["model_id", "category", "accuracy", "epsilon", "norm", "display_name"]
    assert len(df) == 51 and set(df.category) == set(CATEGORIES)
    row = df.set_index("model_id")
    assert (row.loc["robust_resnet50_linf_eps4.0", "epsilon"], row.loc["robust_resnet50_linf_eps4.0", "norm"]) == (4.0, "linf")
    assert (row.loc["robust_resnet50_l2_eps0.03", "epsilon"], row.loc["robust_resnet50_l2_eps0.03", "norm"]) == (0.03, "l2")
    assert row.loc["tv_resnet50", "accuracy"] == 76.15 and row.loc["tv_resnet50", "norm"] is None
    assert df.accuracy.isna().tolist() == [m == "resnet50_frozen_random" for m in df.model_id]
    assert df.epsilon.notna().sum() == 15 and df.accuracy.dtype == "float64"


def test_registry_needs_no_torch():
    code = ("import sys, types; sys.modules['torch'] = None\n"  # any torch import now fails
            f"for name, path in [('layercrit', {str(ROOT / 'src' / 'layercrit')!r}), "
            f"('layercrit.zoo', {str(ROOT / 'src' / 'layercrit' / 'zoo')!r})]:\n"
            "    m = types.ModuleType(name); m.__path__ = [path]; sys.modules[name] = m\n"
            "import layercrit.zoo.registry as r\nprint(len(r.zoo_metadata()), 'torch' in sys.modules and sys.modules['torch'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["51", "None"]


def test_a_user_family_in_a_few_lines(src, tmp_path, monkeypatch):
    monkeypatch.setattr(zoo_registry, "_ZOO", dict(zoo_registry._ZOO))  # leave the real registry untouched
    for eps in ("1", "2"):
        register_zoo_model(f"my_rn50_l2_eps{eps}", category="adversarial training", top1=70.0,
                           source=f"https://example.org/my_rn50_l2_eps{eps}.pth", layout="state_dict")
    assert zoo_metadata().set_index("model_id").loc["my_rn50_l2_eps2", ["epsilon", "norm"]].tolist() == [2.0, "l2"]
    path = _write(tmp_path / "mine.pth", {"state_dict": dict(src)})
    assert_same_weights(lc.create_model("zoo:my_rn50_l2_eps1", checkpoint=path).network, src)
    with pytest.raises(LayercritError, match="unknown zoo source"):
        register_zoo_model("bad", category="x", layout="state_dict", source="ftp:nowhere")


def test_bad_specs_are_clear_errors():
    with pytest.raises(LayercritError, match=r"unknown zoo model 'robust_resnet50_linf_eps4' \(did you mean"):
        lc.create_model("zoo:robust_resnet50_linf_eps4")
    with pytest.raises(LayercritError, match="checkpoint applies to zoo:<id> models"):
        lc.create_model("arch:cifar_resnet50", checkpoint="x.pth")
    with pytest.raises(LayercritError, match="has 1000 classes"):
        lc.create_model("zoo:tv_resnet50", num_classes=10)
    with pytest.raises(LayercritError, match="checkpoint not found"):
        lc.create_model("zoo:tv_resnet50", checkpoint="/nonexistent/w.pth")
    proc = run_cli("zoo", "fetch", "tv_resnet50", "--all")
    assert proc.returncode == 2 and "not both" in proc.stderr
