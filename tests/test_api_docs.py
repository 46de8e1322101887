"""The public API reads in a notebook (issue 23, part 4): every MeasureConfig field is a keyword parameter of
``measure`` (so a field added without its parameter fails here), every public function and class has Args /
Returns / Examples sections, and the docstring examples run."""
from __future__ import annotations

import doctest
import inspect
import re

import pytest

import layercrit as lc
from layercrit import plot
from layercrit.engine.config import MeasureConfig

FROM_CONFIG = inspect.signature(lc.measure).parameters["trials"].default  # the marker of "the config's value"

PUBLIC = [n for n in lc.__all__ if n != "__version__"]
PLOT = [n for n in plot.__all__ if inspect.isfunction(getattr(plot, n))]
# examples that run here in a moment (the others need shared data, a download or a database: +SKIP there)
RUN = ["measure", "create_model", "load_data", "EvalData", "MeasureConfig", "ModelBundle", "ModelSource",
       "ResultStore", "discover_layers", "list_archs", "register_arch", "LayercritError"]


def _sections(doc: str) -> set[str]:
    return set(re.findall(r"^(Args|Returns|Examples|Attributes|Raises):\s*$", doc, re.M))


def test_every_measure_config_field_is_a_keyword_of_measure():
    params = inspect.signature(lc.measure).parameters
    for f in MeasureConfig.options():
        assert f.name in params, f"MeasureConfig.{f.name} is not a keyword parameter of measure()"
        p = params[f.name]
        assert p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is FROM_CONFIG, f.name
    assert repr(FROM_CONFIG) == "<from config>"  # what help() shows: the config's value (or its default)


def test_every_measure_keyword_is_documented():
    doc = inspect.getdoc(lc.measure)
    args = doc.split("Args:")[1].split("Returns:")[0]
    for name, p in inspect.signature(lc.measure).parameters.items():
        shown = f"**{name}" if p.kind is inspect.Parameter.VAR_KEYWORD else name
        assert re.search(rf"^\s+{re.escape(shown)}:", args, re.M), f"measure's Args lack {shown}"


def test_keywords_override_a_config(tiny_model, tiny_data):
    model, factory = tiny_model
    config = MeasureConfig(trials=3, reset=["random", "zero"], layers=["fc"], samples=16)
    df = lc.measure(model, tiny_data, config, factory=factory, normalize=None, trials=1, progress=False)
    assert sorted(df.reset) == ["random", "zero"] and set(df.trial) == {0} and set(df.n_samples) == {16}
    df = lc.measure(model, tiny_data, config, factory=factory, normalize=None, samples=None, reset="zero",
                    progress=False)
    assert list(df.reset) == ["zero"] and set(df.n_samples) == {len(tiny_data)}  # None: every image
    with pytest.raises(lc.LayercritError, match="unknown measurement setting"):
        lc.measure(model, tiny_data, factory=factory, normalize=None, trails=1, progress=False)


@pytest.mark.parametrize("name", PUBLIC + [f"plot.{n}" for n in PLOT])
def test_public_docstrings_have_args_returns_examples(name):
    obj = getattr(plot, name[5:]) if name.startswith("plot.") else getattr(lc, name)
    doc = inspect.getdoc(obj) or ""
    found = _sections(doc)
    if inspect.isclass(obj):
        assert "Examples" in found, f"{name}: no Examples section"
        if not issubclass(obj, BaseException):  # an exception is raised, not made
            assert found & {"Args", "Attributes"}, f"{name}: no Args section"
    else:
        assert {"Args", "Returns", "Examples"} <= found, f"{name}: sections {sorted(found)}"
    assert ">>> " in doc.split("Examples:")[1], f"{name}: Examples hold no example"


@pytest.mark.parametrize("name", RUN)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    obj = getattr(lc, name)
    finder = doctest.DocTestFinder(recurse=False)
    tests = [t for t in finder.find(obj, name, globs={}) if t.examples]
    if inspect.isclass(obj):  # and its public methods' examples (ModelBundle.from_module)
        for attr, value in vars(obj).items():
            fn = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
            if not attr.startswith("_") and inspect.isfunction(fn):
                tests += [t for t in finder.find(fn, f"{name}.{attr}", globs={name: obj}) if t.examples]
    assert tests, f"{name} has no examples"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in tests:
        runner.run(t)
    assert runner.failures == 0, f"{name}: {runner.failures} failing example(s) (doctest's report above)"


def test_version_and_type_marker():
    from importlib import resources

    assert re.fullmatch(r"\d+\.\d+\.\d+.*", lc.__version__)
    assert resources.files("layercrit").joinpath("py.typed").is_file()
