"""Study files (TOML): global settings plus a list of models, each trained by the lab or given as a spec.

    [study]
    name = "cifar10-methods"
    data = "../../shared/data/cifar10"   # CIFAR-10 root (train/ and test/); relative to this file
    arch = "cifar_resnet50"
    seed = 0                             # the measurement's seed, and every lab model's training seed

    [measure]                            # any option of `layercrit measure` (MeasureConfig), same defaults;
    samples = 2000                       # test images measured (drawn once with seed)
    trials = 3                           # they may also stand in [study], as older files have them

    [train]                              # hyperparameters shared by every lab-trained model
    epochs = 15

    [[models]]
    id = "standard"                      # model id in the database and folder name under runs/
    name = "Standard (SGD)"              # display name
    category = "baseline"
    method = "standard"                  # trained by the lab; any hyperparameter may follow

    [[models]]
    id = "pgd-linf-8"
    category = "adversarial"
    method = "pgd-linf"
    eps = "8/255"

    [[models]]
    id = "untrained"
    category = "control"
    spec = "arch:cifar_resnet50"         # any model spec: arch:, file: (+ arch), zoo:, timm:, torchvision:

    [[models]]
    id = "resnet20"                      # a checkpoint of an architecture in your own code
    spec = "file:weights/resnet20.th"    # relative to this file, as is the .py file below
    arch = "models/resnet.py:resnet20"
    input_size = 32                      # what layercrit cannot know about your code: the input resolution
    mean = [0.485, 0.456, 0.406]         # and the normalization (or normalize = "none")
    std = [0.229, 0.224, 0.225]
                                         # key_map = "auto" (or "map.toml", or rules): a checkpoint whose
                                         # names come from another codebase (README: "A checkpoint from another codebase")
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import model_specs, validate
from ..engine import config as measure_config
from ..engine.config import MeasureConfig
from ..errors import ConfigError, LayercritError, name_fields
from ..resets.kinds import parse_reset
from ..paths import safe_name
from ..train import HYPERPARAMETERS, list_methods

STUDY_ONLY_KEYS = {"name", "description", "data", "eval_data", "arch", "runs", "device"}
MODEL_KEYS = {"id", "name", "category", "method", "spec", "arch", "checkpoint", "num_classes", "init_seed", "input_size",
              "mean", "std", "normalize", "key_map"}
SPEC_ONLY_KEYS = ("spec", "checkpoint", "num_classes", "init_seed", "input_size", "mean", "std", "normalize", "key_map")
TOP_KEYS = {"study", "measure", "train", "models"}
LAB_INIT = "init"  # a reset of the study file only: each lab-trained model's own initial weights
# What does not make a lab model a different variant of its method: runs that differ only in these are seeds
# of one variant (the seed spread in reports is taken over them).
NOT_VARIANT = ("seed", "save_epochs")


def measure_keys() -> dict[str, str]:
    """Study-file key -> MeasureConfig field: every field under its own name, and its aliases (``resets``)."""
    out = {}
    for f in measure_config.MeasureConfig.options():
        out[f.name] = f.name
        out.update(dict.fromkeys(f.metadata.get("aliases", ()), f.name))
    return out


@dataclass
class ModelEntry:
    id: str
    name: str
    category: str | None
    method: str | None = None
    hyperparameters: dict = field(default_factory=dict)
    spec: str | None = None
    arch: str | None = None
    checkpoint: str | None = None
    num_classes: int | None = None
    init_seed: int | None = None
    input_size: int | None = None  # spec models: the input resolution where the model does not know it
    mean: tuple[float, ...] | None = None  # spec models: the input normalization (create_model's mean/std)
    std: tuple[float, ...] | None = None
    raw_input: bool = False  # normalize = "none": [0, 1] images as they are
    key_map: tuple[str, ...] | None = None  # file: specs from another codebase: "auto", rules, rule files
    variant: str | None = None  # lab models: the method and what this entry sets beyond the seed ("pgd-linf eps=8/255")

    def spec_options(self) -> dict:
        """``create_model`` keywords for a spec model (architecture, classes, checkpoint, normalization), the
        same wherever the study builds it (measuring, the accuracy table)."""
        options: dict = {"arch": self.arch, "num_classes": self.num_classes, "init_seed": self.init_seed,
                         "checkpoint": self.checkpoint, "mean": self.mean, "std": self.std}
        if options["init_seed"] is None:
            del options["init_seed"]  # create_model's default
        if self.raw_input:
            options["normalize"] = None
        if self.key_map is not None:
            options["key_map"] = list(self.key_map)
        return options


@dataclass
class Study:
    path: Path
    name: str
    data: Path
    eval_data: Path | None
    arch: str
    runs: Path
    config: MeasureConfig  # the measurement settings ([measure], or [study]); its resets without "init"
    resets: list[str]  # the resets as the file lists them, "init" included (a lab model's own initial weights)
    device: str
    models: list[ModelEntry]
    description: str = ""

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def samples(self) -> int | None:
        return self.config.samples

    @property
    def trials(self) -> int:
        return self.config.trials

    def select(self, only: list[str] | None) -> list[ModelEntry]:
        if not only:
            return list(self.models)
        ids = [m.id for m in self.models]
        missing = [o for o in only if o not in ids]
        if missing:
            raise ConfigError(f"{{only}} {', '.join(missing)}: not in {self.path.name} (models: {', '.join(ids)})")
        return [m for m in self.models if m.id in only]


def _resolve(base: Path, value) -> Path:
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def load_study(path: str | Path, runs: str | Path | None = None) -> Study:
    """Parse and check a study file; relative paths are resolved against the file's folder."""
    path = Path(path)
    raw = _read(path)
    study = _settings(path, raw, runs)
    shared = _train_table(path, raw)
    models = raw.get("models")
    if not isinstance(models, list) or not models:
        raise LayercritError(f"{path}: no models: add [[models]] tables with id and method or spec")
    seen: set[str] = set()
    for i, m in enumerate(models, 1):
        mid, where = _model_id(path, m, i)
        if mid in seen:
            raise LayercritError(f"{where}: id '{mid}' appears twice: model ids must be unique")
        seen.add(mid)
        if ("method" in m) == ("spec" in m):
            raise LayercritError(f"{where}: give exactly one of method = \"<training method>\" or spec = \"<model spec>\"")
        entry = _lab_entry(study, shared, m, mid, where) if "method" in m else _spec_entry(study, m, mid, where)
        study.models.append(entry)
    return study


def _read(path: Path) -> dict[str, Any]:
    """The file's TOML tables, checked for unknown sections."""
    if not path.is_file():
        raise LayercritError(f"study file not found: {path}: check the path")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise LayercritError(f"{path} is not valid TOML ({e}): fix the file") from None
    except UnicodeDecodeError:
        raise LayercritError(f"{path} is not a text file: give a .toml study file") from None
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise LayercritError(f"{path}: unknown section(s) {', '.join(unknown)}: use [study], [measure], [train] "
                             "and [[models]]")
    for key, how in (("study", "a table [study]"), ("measure", "a table [measure] of measurement options")):
        if not isinstance(raw.get(key, {}), dict):
            raise LayercritError(f"{path}: '{key}' must be {how}")
    return raw


def _settings(path: Path, raw: dict[str, Any], runs: str | Path | None) -> Study:
    """[study] and the measurement settings ([measure], or [study] as older files have them)."""
    st, given = raw.get("study", {}), raw.get("measure", {})
    keys = measure_keys()
    unknown = sorted(set(st) - STUDY_ONLY_KEYS - set(keys))
    if unknown:
        raise LayercritError(f"{path}: unknown key(s) {', '.join(unknown)} in [study]: use any of "
                             f"{', '.join(sorted(STUDY_ONLY_KEYS | set(keys)))}")
    unknown = sorted(set(given) - set(keys))
    if unknown:
        raise LayercritError(f"{path}: unknown key(s) {', '.join(unknown)} in [measure]: use any of "
                             f"{', '.join(sorted(keys))} (the options of `layercrit measure`)")
    settings = {k: ("study", v) for k, v in st.items() if k in keys}
    for k, v in given.items():
        if keys[k] in {keys[o] for o in settings}:
            raise LayercritError(f"{path}: {k} is set in both [study] and [measure]: keep one")
        settings[k] = ("measure", v)
    if "data" not in st:
        raise LayercritError(f"{path}: [study] needs data = \"<CIFAR-10 root or image folder>\"")
    where = f"{path}: [study]"
    for key in ("data", "eval_data", "runs"):
        if key in st:
            validate.text(st[key], f"{where} {key}")
    base = path.resolve().parent
    config, resets = study_config(path, settings)
    return Study(
        path=path, name=validate.text(st.get("name", path.stem), f"{where} name"),
        description=validate.text(st.get("description", ""), f"{where} description", allow_empty=True),
        data=_resolve(base, st["data"]), eval_data=_resolve(base, st["eval_data"]) if "eval_data" in st else None,
        arch=validate.text(st.get("arch", "cifar_resnet50"), f"{where} arch"),
        runs=_resolve(Path.cwd(), runs) if runs else _resolve(base, st.get("runs", f"runs/{path.stem}")),
        config=config, resets=resets, device=validate.text(st.get("device", "cpu"), f"{where} device"), models=[])


def study_config(path: Path, settings: dict[str, tuple[str, Any]]) -> tuple[MeasureConfig, list[str]]:
    """The MeasureConfig of a file's measurement settings (key -> (section, value)) and its reset list with
    ``init``; errors name the file, the section and the key."""
    keys = measure_keys()
    values = {keys[k]: v for k, (_, v) in settings.items()}
    used = {keys[k]: (section, k) for k, (section, _) in settings.items()}  # field -> (section, key in the file)
    listed = values.get("reset")
    listed = [listed] if isinstance(listed, str) else listed
    if isinstance(listed, list) and LAB_INIT in listed:  # checked without it; put back in place below
        values["reset"] = [r for r in listed if r != LAB_INIT] or [MeasureConfig.defaults()["reset"][0]]
    try:
        config = measure_config.MeasureConfig(**values)
    except ConfigError as e:
        raise LayercritError(_in_file(path, e, used)) from None
    if not isinstance(listed, list) or LAB_INIT not in listed:
        return config, list(config.reset)
    return config, list(dict.fromkeys(r if r == LAB_INIT else parse_reset(r).name for r in listed))


def _in_file(path: Path, e: ConfigError, used: dict[str, tuple[str, str]]) -> str:
    """A MeasureConfig error as a study file reads: the fields as its keys, the first with its place
    ("study.toml: [study] samples -1: must be ...")."""
    keys = {f: used.get(f, ("measure", f))[1] for f in e.fields}
    text = e.naming(keys)
    if not e.fields:
        return f"{path}: {text}"
    first = e.fields[0]
    section, key = used.get(first, ("measure", first))
    if e.template.startswith("{" + first + "}"):
        return f"{path}: [{section}] {key}{text[len(key):]}"
    return f"{path}: [{section}] {key}: {text}"


def _train_table(path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    shared = raw.get("train", {})
    if not isinstance(shared, dict):
        raise LayercritError(f"{path}: 'train' must be a table [train] of hyperparameters")
    bad = sorted(set(shared) - set(HYPERPARAMETERS))
    if bad:
        raise LayercritError(f"{path}: unknown hyperparameter(s) {', '.join(bad)} in [train]: use any of "
                             f"{', '.join(HYPERPARAMETERS)}")
    return shared


def _model_id(path: Path, m: Any, i: int) -> tuple[str, str]:
    """A [[models]] table's id (a plain name) and how messages name the entry; its common keys checked."""
    if not isinstance(m, dict):
        raise LayercritError(f"{path}: models entry {i} is not a table: write it as [[models]]")
    mid = m.get("id")
    if not isinstance(mid, str) or not mid:
        raise LayercritError(f"{path}: model {mid or f'#{i}'}: needs id = \"<name>\" (a plain name: it is a folder "
                             "and database id)")
    safe_name(mid, f"{path}: model id")  # it names the model's folder under runs/
    where = f"{path}: model {mid}"
    for key in ("name", "category", "arch", "checkpoint", "spec", "method"):
        if key in m:
            validate.text(m[key], f"{where}: {key}")
    return mid, where


def _lab_entry(study: Study, shared: dict[str, Any], m: dict[str, Any], mid: str, where: str) -> ModelEntry:
    """A model the training lab trains: ``method`` and hyperparameters."""
    methods = list_methods()
    if m["method"] not in methods:
        raise LayercritError(f"{where}: unknown training method '{m['method']}': use one of {', '.join(methods)}")
    hp = {k: v for k, v in m.items() if k not in MODEL_KEYS}
    bad = sorted(set(hp) - set(HYPERPARAMETERS))
    if bad:
        raise LayercritError(f"{where}: unknown key(s) {', '.join(bad)}: use {', '.join(sorted(MODEL_KEYS))} "
                             f"or a hyperparameter ({', '.join(HYPERPARAMETERS)})")
    for k in SPEC_ONLY_KEYS:
        if k in m:
            raise LayercritError(f"{where}: {k} applies to spec models, not to method = \"{m['method']}\"")
    entry = ModelEntry(id=mid, name=str(m.get("name", mid)), category=m.get("category"), method=m["method"])
    entry.hyperparameters = {"arch": m.get("arch", study.arch), "seed": study.seed, **shared, **hp}
    entry.variant = " ".join([m["method"], *(f"{k}={v}" for k, v in hp.items() if k not in NOT_VARIANT)])
    return entry


def _spec_entry(study: Study, m: dict[str, Any], mid: str, where: str) -> ModelEntry:
    """A model given by a spec (any kind ``model_specs`` knows), with what layercrit cannot know about it."""
    if "num_classes" in m:
        validate.num_classes(m["num_classes"], f"{where}: num_classes")
    if "init_seed" in m:
        validate.seed(m["init_seed"], f"{where}: init_seed")
    if "input_size" in m:
        validate.input_size(m["input_size"], f"{where}: input_size")
    mean, std = validate.normalization(m.get("mean"), m.get("std"), names=(f"{where}: mean", f"{where}: std"))
    if "normalize" in m and (m["normalize"] != "none" or mean is not None):
        raise LayercritError(f"{where}: normalize = {m['normalize']!r}: the only value is \"none\" (raw [0, 1] "
                             "input), and not together with mean/std")
    unknown = sorted(set(m) - MODEL_KEYS)
    if unknown:
        raise LayercritError(f"{where}: unknown key(s) {', '.join(unknown)} for a spec model: "
                             f"use {', '.join(sorted(MODEL_KEYS - {'method'}))}")
    spec = m["spec"]
    if not isinstance(spec, str):
        raise LayercritError(f"{where}: spec = {spec!r} should be a str")
    kind, _, rest = spec.partition(":")
    if model_specs.get_spec_kind(kind) is None or not rest:
        usages = ", ".join(model_specs.spec_usages())
        raise LayercritError(f"{where}: unknown model spec {spec!r}: use {name_fields(usages, {})}")
    base = study.path.resolve().parent
    if kind == "file":
        spec = "file:" + str(_resolve(base, rest))
    elif kind == "arch":
        spec = "arch:" + _code_path(base, rest)
    arch = m.get("arch", study.arch if kind == "file" else None)
    return ModelEntry(id=mid, name=str(m.get("name", mid)), category=m.get("category"), spec=spec,
                      arch=_code_path(base, arch) if arch else arch,
                      checkpoint=str(_resolve(base, m["checkpoint"])) if "checkpoint" in m else None,
                      num_classes=m.get("num_classes"), init_seed=m.get("init_seed", study.seed),
                      input_size=m.get("input_size"), mean=mean, std=std, raw_input=m.get("normalize") == "none",
                      key_map=_key_map(base, m["key_map"], kind, where) if "key_map" in m else None)


def _key_map(base: Path, value: Any, kind: str, where: str) -> tuple[str, ...]:
    """A spec model's ``key_map`` (``create_model``'s): "auto", a rule "PATTERN=REPLACEMENT", a TOML file of
    rules (relative to the study file), or a list of rules and files. Read in full here, so that a wrong map
    stops the study before anything is measured."""
    from ..models.keymap import KeyMap  # imports torch: only for a study that uses key maps

    if kind != "file":
        raise LayercritError(f"{where}: key_map applies to file: checkpoints (names from another codebase); "
                             f"a {kind}: spec names its weights itself")
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) for v in items):
        raise LayercritError(f"{where}: key_map = {value!r}: give \"auto\", a TOML file of rules, a rule "
                             "\"PATTERN=REPLACEMENT\", or a list of rules and files")
    # a file (relative to the study file) wherever one is there, so that a path with "=" is not taken for a rule
    resolved = tuple(str(_resolve(base, v)) if v != "auto" and ((base / v).is_file() or "=" not in v) else v
                     for v in items)
    try:
        KeyMap.parse(list(resolved))
    except ConfigError as e:
        raise LayercritError(f"{where}: {e}") from None  # str() names the study file's key_map
    return resolved


def _code_path(base: Path, arch: str) -> str:
    """An architecture in the user's code, ``path/to/file.py:callable``, with the file relative to the study
    file (like ``file:`` specs); any other architecture name as it is."""
    where, sep, attr = arch.rpartition(":")
    if not sep or not where.endswith(".py") or ":remove=" in arch:
        return arch
    return f"{_resolve(base, where)}:{attr}"
