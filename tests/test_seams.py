"""One source of truth (issue 22): an option, a reset kind, a registry entry is defined once and shows up
everywhere it is used (the command line, study files, Python, Ray)."""
from __future__ import annotations

import ast
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn as nn
from conftest import noise_image_folder, run_cli

import layercrit as lc
from layercrit import validate
from layercrit.engine import config as engine_config
from layercrit.engine.config import MeasureConfig, option
from layercrit.errors import ConfigError, LayercritError

SRC = Path(__file__).resolve().parents[1] / "src" / "layercrit"


# --- a measurement option is one field ---------------------------------------------------------------------

@dataclass(frozen=True)
class WithWarmup(MeasureConfig):
    """MeasureConfig plus one option, declared as every field is: nothing else is written for it."""

    warmup_batches: int = option(0, "batches run before measuring, e.g. to settle {engine} timing",
                                 check=lambda v, name: validate.integer(v, name, low=0, what="a number of batches"),
                                 parse=int, group="speed")


@pytest.fixture
def extended(monkeypatch):
    # Modules imported while the patch is active would bind WithWarmup for good (``from .config import
    # MeasureConfig``) and refuse real MeasureConfigs in later tests: import them all first.
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages(lc.__path__, "layercrit."):
        if ".scale.ray" not in info.name and not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    monkeypatch.setattr(engine_config, "MeasureConfig", WithWarmup)
    return WithWarmup


def test_a_new_field_is_a_flag_of_measure_and_study_run(extended, tmp_path):
    from layercrit.cli import build_parser
    from layercrit.cli.options import config_from_args

    for command in (["measure"], ["study", "run"]):
        out = " ".join(run_cli(*command, "--help").stdout.split())  # argparse wraps the help
        assert "--warmup-batches" in out and "settle --engine timing" in out and "(default 0)" in out
    args = build_parser().parse_args(["measure", "--model", "arch:cifar_resnet50", "--data", "d", "--db", "x.db",
                                      "--warmup-batches", "3", "--trials", "1"])
    config = config_from_args(args)
    assert isinstance(config, WithWarmup) and config.warmup_batches == 3 and config.trials == 1
    proc = run_cli("measure", "--model", "arch:cifar_resnet50", "--data", str(tmp_path), "--db",
                   str(tmp_path / "s.db"), "--warmup-batches", "-2")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("layercrit: error: --warmup-batches -2: must be a number of batches of at "
                                   "least 0")
    assert not (tmp_path / "s.db").exists()


def test_a_new_field_is_a_study_file_setting(extended, tmp_path):
    from layercrit.study import load_study

    body = '[[models]]\nid = "m"\nspec = "arch:cifar_resnet50"\n'
    path = tmp_path / "s.toml"
    path.write_text(f'[study]\ndata = "."\n[measure]\nwarmup_batches = 4\n{body}')
    assert load_study(path).config.warmup_batches == 4
    path.write_text(f'[study]\ndata = "."\n{body}')
    assert load_study(path).config.warmup_batches == 0  # the field's default, as on the command line
    path.write_text(f'[study]\ndata = "."\n[measure]\nwarmup_batches = -1\n{body}')
    with pytest.raises(LayercritError, match=r"s.toml: \[measure\] warmup_batches -1: must be a number of batches"):
        load_study(path)


def test_a_new_field_is_a_python_keyword(extended):
    config = WithWarmup(warmup_batches=2)
    assert config.replace(warmup_batches=5).warmup_batches == 5 and config.trials == 3
    with pytest.raises(ConfigError) as e:
        WithWarmup(warmup_batches="many")
    assert e.value.fields == ("warmup_batches",) and str(e.value).startswith("warmup_batches 'many'")


def test_study_file_takes_every_measure_option_with_the_same_defaults(tmp_path):
    from layercrit.study import load_study

    path = tmp_path / "s.toml"
    path.write_text('[study]\ndata = "."\n[[models]]\nid = "m"\nspec = "arch:cifar_resnet50"\n')
    assert load_study(path).config == MeasureConfig()  # samples 10,000, as measure's
    settings = {"precision": '"bf16"', "target_ci": "0.5", "unit": '"block"', "layers": '["layer4.*"]',
                "batch_size": '"auto"', "max_memory": '"2G"', "reset": '["random", "noise:0.25"]',
                "channels_last": "false", "data_cache": "false", "input_size": "32", "samples": '"all"'}
    path.write_text('[study]\ndata = "."\n[measure]\n' + "".join(f"{k} = {v}\n" for k, v in settings.items())
                    + '[[models]]\nid = "m"\nspec = "arch:cifar_resnet50"\n')
    config = load_study(path).config
    assert (config.precision, config.target_ci, config.unit, config.layers, config.batch_size, config.max_memory,
            config.reset, config.channels_last, config.input_size, config.samples) == \
        ("bf16", 0.5, "block", ("layer4.*",), "auto", 2 * 2**30, ("random", "noise:0.25"), False, 32, None)
    fields = {f.name for f in MeasureConfig.options()}
    flags = run_cli("measure", "--help").stdout
    from layercrit.cli import flag

    assert all(flag(f) in flags for f in fields)  # every option is a flag of measure too


def test_study_file_keeps_its_older_keys(tmp_path):
    from layercrit.study import load_study

    path = tmp_path / "s.toml"
    path.write_text('[study]\ndata = "."\nsamples = 2000\ntrials = 1\nresets = ["init", "interpolate:.50"]\n'
                    '[[models]]\nid = "m"\nspec = "arch:cifar_resnet50"\n')
    study = load_study(path)
    assert study.samples == 2000 and study.trials == 1
    assert study.resets == ["init", "interpolate:0.5"] and study.config.reset == ("interpolate:0.5",)
    path.write_text('[study]\ndata = "."\nsamples = 20\n[measure]\nsamples = 30\n[[models]]\nid = "m"\n'
                    'spec = "arch:cifar_resnet50"\n')
    with pytest.raises(LayercritError, match="samples is set in both"):
        load_study(path)


# --- reset kinds: a registry; noise:<sigma> from one file ---------------------------------------------------

def test_help_and_errors_list_the_registered_kinds():
    from layercrit.resets.kinds import base

    @base.register_reset("flip", summary="the layer's weights negated (a test kind)")
    class FlipReset(base.Reset):
        def values(self, network, unit, trial):
            return {k: -p.detach() for k, p in base.params_of(network, unit).items()}

    try:
        help_text = " ".join(run_cli("measure", "--help").stdout.split())
        assert "noise:<sigma>" in help_text and "flip " in help_text and "(a test kind)" in help_text
        with pytest.raises(ConfigError, match=r"unknown reset 'shuffle': use one of random, .*noise:<sigma> or flip"):
            MeasureConfig(reset="shuffle")
        assert MeasureConfig(reset=["flip", "zero"]).reset == ("flip", "zero")
    finally:
        base._KINDS.pop("flip")


def test_noise_is_seeded_by_seed_trial_and_layer_alone(tiny_model):
    from layercrit.resets import ResetContext, parse_reset

    model, factory = tiny_model
    reset = parse_reset("noise:0.50")
    assert reset.name == "noise:0.5" and reset.stochastic
    a = reset.prepare(ResetContext(factory, model, seed=3)).values(model, "conv1", 1)
    b = parse_reset("noise:0.5").portable().prepare(ResetContext(None, model, seed=3)).values(model, "conv1", 1)
    assert all(torch.equal(a[k], b[k]) for k in a)  # another instance, prepared elsewhere: the same draw
    c = reset.values(model, "conv1", 2)
    noise = a["weight"] - model.conv1.weight.detach()
    assert not torch.equal(a["weight"], c["weight"]) and not torch.equal(noise, torch.zeros_like(noise))
    assert abs(noise.std().item() / model.conv1.weight.std().item() - 0.5) < 0.1  # sigma x the weight's std
    assert list(model.conv1.weight.shape) == list(a["weight"].shape)
    for bad in ("noise:0", "noise:-1", "noise:x", "noise:nan"):
        with pytest.raises(ConfigError, match="sigma must be a positive number"):
            parse_reset(bad)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return noise_image_folder(tmp_path_factory.mktemp("tmp") / "data", per_class=2)


OPTIONS = {"samples": 16, "trials": 2, "seed": 5, "batch_size": 8, "layers": ["conv1", "fc"],
           "reset": ["noise:0.5", "zero"]}


def _cli_args(folder, db, *extra):
    return ["measure", "--model", "arch:cifar_resnet50", "--data", str(folder), "--samples", "16", "--trials", "2",
            "--seed", "5", "--batch-size", "8", "--layers", "conv1", "fc", "--reset", "noise:0.5", "--reset", "zero",
            "--db", str(db), "--no-progress", *extra]


def _rows(db) -> pd.DataFrame:
    with lc.ResultStore(db, create=False) as store:
        table = store.results()
    return table.drop(columns=["elapsed_seconds", "run_id"]).sort_values(
        ["layer", "reset", "trial"]).reset_index(drop=True)


def test_noise_from_the_cli_a_study_file_python_and_ray_gives_the_same_rows(folder, tmp_path):
    from layercrit.study import run_study

    cli = tmp_path / "cli.db"
    run_cli(*_cli_args(folder, cli), check=True)
    reference = _rows(cli)
    assert len(reference) == 2 * 2 + 2  # noise x 2 trials, zero at trial 0 only
    noise = reference[reference["reset"] == "noise:0.5"]
    assert noise.groupby("layer")["criticality"].nunique().eq(2).all()  # trials are different draws

    py = tmp_path / "python.db"
    lc.measure("arch:cifar_resnet50", str(folder), store=str(py), progress=False, **OPTIONS)
    pd.testing.assert_frame_equal(_rows(py), reference, check_exact=True)

    study = tmp_path / "s.toml"
    study.write_text(f'[study]\ndata = "{folder}"\n[measure]\nsamples = 16\ntrials = 2\nseed = 5\nbatch_size = 8\n'
                     'layers = ["conv1", "fc"]\nreset = ["noise:0.5", "zero"]\n'
                     '[[models]]\nid = "cifar_resnet50"\nspec = "arch:cifar_resnet50"\ninit_seed = 0\n')
    st = tmp_path / "study.db"
    run_study(study, st, progress=False)
    pd.testing.assert_frame_equal(_rows(st).drop(columns="category"), reference.drop(columns="category"),
                                  check_exact=True)

    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'layercrit[ray]'")
    ray.init(num_cpus=1, include_dashboard=False, logging_level=logging.WARNING)
    try:
        on_ray = tmp_path / "ray.db"
        run_cli(*_cli_args(folder, on_ray, "--backend", "ray"), check=True)
    finally:
        ray.shutdown()
    pd.testing.assert_frame_equal(_rows(on_ray), reference, check_exact=True)


# --- registries, errors, temporary state, function size ----------------------------------------------------

def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            out.add((node.module or "").split(".")[0])
    return out


def test_architecture_registry_is_a_leaf():
    """A table only: neither timm nor torchvision, and of layercrit only the leaf modules (errors, validate)."""
    path = SRC / "models" / "registry.py"
    imported = _imports(path)
    assert not imported & {"timm", "torchvision"}, imported
    relative = {(n.level, n.module, tuple(a.name for a in n.names)) for n in ast.walk(ast.parse(path.read_text()))
                if isinstance(n, ast.ImportFrom) and n.level}
    assert relative == {(2, None, ("validate",)), (2, "errors", ("ConfigError", "LayercritError"))}, relative


def test_study_files_ask_model_specs_for_spec_kinds(tmp_path):
    from layercrit.model_specs import register_spec_kind
    from layercrit.study import load_study

    path = tmp_path / "s.toml"
    path.write_text('[study]\ndata = "."\n[[models]]\nid = "m"\nspec = "mine:x"\n')
    with pytest.raises(LayercritError, match="unknown model spec 'mine:x'.*file:<path> with arch"):
        load_study(path)

    @register_spec_kind("mine", usage="mine:<x>")
    def create(rest, spec, options):  # pragma: no cover (never built here)
        raise AssertionError

    from layercrit import model_specs

    try:
        assert load_study(path).models[0].spec == "mine:x"
    finally:
        model_specs._KINDS.pop("mine")


def test_config_error_is_a_value_error(tiny_data):
    with pytest.raises(ValueError, match="samples 0"):
        lc.measure(nn.Linear(2, 2), tiny_data, samples=0, normalize=None)
    assert issubclass(ConfigError, LayercritError) and issubclass(ConfigError, ValueError)


class _Probe(nn.Module):
    def __init__(self, fail: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 2)
        self.fail = fail

    def forward(self, x):
        if self.fail:
            raise RuntimeError("boom")
        return self.head(self.conv(x).mean((2, 3)))


def test_forward_order_restores_each_submodules_own_mode():
    from layercrit.resets import discover_layers
    from layercrit.resets.layers import forward_order

    net = _Probe().train()
    net.conv.eval()  # a submodule in its own mode (e.g. frozen BatchNorm)
    assert [u.name for u in discover_layers(net, 8)] == ["conv", "head"]
    assert net.training and not net.conv.training and net.head.training
    broken = _Probe(fail=True).train()
    broken.head.eval()
    with pytest.raises(RuntimeError, match="boom"):
        forward_order(broken, [broken.conv], 8, 3)
    assert broken.training and broken.conv.training and not broken.head.training
    assert not broken.conv._forward_pre_hooks  # the hooks are gone too


FUNCTIONS = {("study/spec.py", "load_study"), ("scale/ray/driver.py", "RayExecutor.run"),
             ("study/run.py", "run_study"), ("engine/evaluation.py", "evaluate")}


def _length(path: Path, qualified: str) -> int:
    tree = ast.parse(path.read_text())
    *owner, name = qualified.split(".")
    scope = tree.body
    for o in owner:
        scope = next(n for n in scope if isinstance(n, ast.ClassDef) and n.name == o).body
    node = next(n for n in scope if isinstance(n, ast.FunctionDef) and n.name == name)
    return node.end_lineno - node.lineno + 1


@pytest.mark.parametrize("where", sorted(FUNCTIONS), ids=[f for _, f in sorted(FUNCTIONS)])
def test_functions_a_newcomer_can_hold_in_their_head(where):
    assert _length(SRC / where[0], where[1]) < 60


def test_noise_on_weights_without_spread_is_said_not_silent(caplog):
    from layercrit.resets import parse_reset

    layer = nn.Sequential(nn.Linear(3, 2))
    with torch.no_grad():
        layer[0].weight.fill_(0.5)  # all equal: std 0, so sigma x std is 0
    with caplog.at_level(logging.WARNING, logger="layercrit"):
        values = parse_reset("noise:0.5").values(layer, "0", 0)
    assert torch.equal(values["weight"], layer[0].weight) and torch.equal(values["bias"], layer[0].bias)
    assert any("no spread" in r.getMessage() for r in caplog.records)
