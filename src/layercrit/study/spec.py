"""Study files (TOML): global settings plus a list of models, each trained by the lab or given as a spec.

    [study]
    name = "cifar10-methods"
    data = "../../shared/data/cifar10"   # CIFAR-10 root (train/ and test/); relative to this file
    arch = "cifar_resnet50"
    seed = 0
    samples = 2000                       # test images measured (drawn once with seed)
    trials = 3

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
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .. import validate
from ..errors import LayercritError
from ..paths import safe_name
from ..train import HYPERPARAMETERS, list_methods

SPEC_KINDS = ("arch", "timm", "torchvision", "file", "zoo")  # model spec kinds (layercrit.models)

STUDY_KEYS = {"name", "description", "data", "eval_data", "arch", "seed", "samples", "trials", "runs", "resets",
              "batch_size", "device", "engine"}
MODEL_KEYS = {"id", "name", "category", "method", "spec", "arch", "checkpoint", "num_classes", "init_seed", "input_size",
              "mean", "std", "normalize"}
SPEC_ONLY_KEYS = ("spec", "checkpoint", "num_classes", "init_seed", "input_size", "mean", "std", "normalize")
TOP_KEYS = {"study", "train", "models"}
# What does not make a lab model a different variant of its method: runs that differ only in these are seeds
# of one variant (the seed spread in reports is taken over them).
NOT_VARIANT = ("seed", "save_epochs")


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
        return options


@dataclass
class Study:
    path: Path
    name: str
    data: Path
    eval_data: Path | None
    arch: str
    seed: int
    samples: int | None
    trials: int
    runs: Path
    resets: list[str]
    batch_size: int
    device: str
    engine: str
    models: list[ModelEntry]
    description: str = ""

    def select(self, only: list[str] | None) -> list[ModelEntry]:
        if not only:
            return list(self.models)
        ids = [m.id for m in self.models]
        missing = [o for o in only if o not in ids]
        if missing:
            raise LayercritError(f"--only {', '.join(missing)}: not in {self.path.name} (models: {', '.join(ids)})")
        return [m for m in self.models if m.id in only]


def _resolve(base: Path, value) -> Path:
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _typed(where: str, key: str, value, kind):
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise LayercritError(f"{where}: {key} = {value!r} should be a {getattr(kind, '__name__', kind)}")
    return value


def load_study(path: str | Path, runs: str | Path | None = None) -> Study:
    """Parse and check a study file; relative paths are resolved against the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise LayercritError(f"study file not found: {path}: check the path")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise LayercritError(f"{path} is not valid TOML ({e}): fix the file") from None
    except UnicodeDecodeError:
        raise LayercritError(f"{path} is not a text file: give a .toml study file") from None
    base = path.resolve().parent
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise LayercritError(f"{path}: unknown section(s) {', '.join(unknown)}: use [study], [train] and [[models]]")
    st = raw.get("study", {})
    if not isinstance(st, dict):
        raise LayercritError(f"{path}: 'study' must be a table [study]")
    unknown = sorted(set(st) - STUDY_KEYS)
    if unknown:
        raise LayercritError(f"{path}: unknown key(s) {', '.join(unknown)} in [study]: use any of "
                             f"{', '.join(sorted(STUDY_KEYS))}")
    if "data" not in st:
        raise LayercritError(f"{path}: [study] needs data = \"<CIFAR-10 root or image folder>\"")
    where = f"{path}: [study]"
    shared = raw.get("train", {})
    if not isinstance(shared, dict):
        raise LayercritError(f"{path}: 'train' must be a table [train] of hyperparameters")
    bad = sorted(set(shared) - set(HYPERPARAMETERS))
    if bad:
        raise LayercritError(f"{path}: unknown hyperparameter(s) {', '.join(bad)} in [train]: use any of "
                             f"{', '.join(HYPERPARAMETERS)}")
    # the same rules as the command line and Python (layercrit.validate), named as in the file
    samples = validate.samples(st.get("samples", 2000), f"{where} samples")
    resets = st.get("resets", ["random"])
    if isinstance(resets, str):
        resets = [resets]
    if not isinstance(resets, list) or not resets:
        raise LayercritError(f"{where}: resets = {resets!r} should be a list of resets, e.g. [\"random\", \"zero\"]")
    resets = list(dict.fromkeys("init" if r == "init" else validate.reset_name(r, f"{where} resets")
                                for r in resets))
    for key in ("data", "eval_data", "runs"):
        if key in st:
            validate.text(st[key], f"{where} {key}")
    study = Study(
        path=path, name=validate.text(st.get("name", path.stem), f"{where} name"),
        description=validate.text(st.get("description", ""), f"{where} description", allow_empty=True),
        data=_resolve(base, st["data"]),
        eval_data=_resolve(base, st["eval_data"]) if "eval_data" in st else None,
        arch=validate.text(st.get("arch", "cifar_resnet50"), f"{where} arch"),
        seed=validate.seed(st.get("seed", 0), f"{where} seed"), samples=samples,
        trials=validate.trials(st.get("trials", 3), f"{where} trials"),
        runs=_resolve(Path.cwd(), runs) if runs else _resolve(base, st.get("runs", f"runs/{path.stem}")),
        resets=resets,
        batch_size=validate.batch_size(st.get("batch_size", 128), f"{where} batch_size"),
        device=validate.text(st.get("device", "cpu"), f"{where} device"),
        engine=validate.choice(st.get("engine", "cached"), f"{where} engine", validate.ENGINES), models=[],
    )
    models = raw.get("models")
    if not isinstance(models, list) or not models:
        raise LayercritError(f"{path}: no models: add [[models]] tables with id and method or spec")
    methods = list_methods()
    seen = set()
    for i, m in enumerate(models, 1):
        if not isinstance(m, dict):
            raise LayercritError(f"{path}: models entry {i} is not a table: write it as [[models]]")
        mid = m.get("id")
        where = f"{path}: model {mid or f'#{i}'}"
        if not isinstance(mid, str) or not mid:
            raise LayercritError(f"{where}: needs id = \"<name>\" (a plain name: it is a folder and database id)")
        safe_name(mid, f"{path}: model id")  # it names the model's folder under runs/
        where = f"{path}: model {mid}"
        for key in ("name", "category", "arch", "checkpoint", "spec", "method"):
            if key in m:
                validate.text(m[key], f"{where}: {key}")
        if "num_classes" in m:
            validate.num_classes(m["num_classes"], f"{where}: num_classes")
        if "init_seed" in m:
            validate.seed(m["init_seed"], f"{where}: init_seed")
        if "input_size" in m:
            validate.input_size(m["input_size"], f"{where}: input_size")
        mean, std = validate.normalization(m.get("mean"), m.get("std"), prefix=f"{where}: ")
        if "normalize" in m and (m["normalize"] != "none" or mean is not None):
            raise LayercritError(f"{where}: normalize = {m['normalize']!r}: the only value is \"none\" (raw [0, 1] "
                                 "input), and not together with mean/std")
        if mid in seen:
            raise LayercritError(f"{where}: id '{mid}' appears twice: model ids must be unique")
        seen.add(mid)
        if ("method" in m) == ("spec" in m):
            raise LayercritError(f"{where}: give exactly one of method = \"<training method>\" or spec = \"<model spec>\"")
        hp = {k: v for k, v in m.items() if k not in MODEL_KEYS}
        entry = ModelEntry(id=mid, name=str(m.get("name", mid)), category=m.get("category"))
        if "method" in m:
            if m["method"] not in methods:
                raise LayercritError(f"{where}: unknown training method '{m['method']}': use one of {', '.join(methods)}")
            bad = sorted(set(hp) - set(HYPERPARAMETERS))
            if bad:
                raise LayercritError(f"{where}: unknown key(s) {', '.join(bad)}: use {', '.join(sorted(MODEL_KEYS))} "
                                     f"or a hyperparameter ({', '.join(HYPERPARAMETERS)})")
            for k in SPEC_ONLY_KEYS:
                if k in m:
                    raise LayercritError(f"{where}: {k} applies to spec models, not to method = \"{m['method']}\"")
            entry.method = m["method"]
            entry.hyperparameters = {"arch": m.get("arch", study.arch), "seed": study.seed, **shared, **hp}
            entry.variant = " ".join([entry.method, *(f"{k}={v}" for k, v in hp.items() if k not in NOT_VARIANT)])
        else:
            if hp:
                raise LayercritError(f"{where}: unknown key(s) {', '.join(sorted(hp))} for a spec model: "
                                     f"use {', '.join(sorted(MODEL_KEYS - {'method'}))}")
            spec = _typed(where, "spec", m["spec"], str)
            kind = spec.partition(":")[0]
            if kind not in SPEC_KINDS or not spec.partition(":")[2]:
                raise LayercritError(f"{where}: unknown model spec {spec!r}: use {', '.join(k + ':' for k in SPEC_KINDS)}")
            if spec.startswith("file:"):
                spec = "file:" + str(_resolve(base, spec[5:]))
            if spec.startswith("arch:"):
                spec = "arch:" + _code_path(base, spec[5:])
            arch = m.get("arch", study.arch if spec.startswith("file:") else None)
            entry.spec, entry.arch = spec, _code_path(base, arch) if arch else arch
            entry.checkpoint = str(_resolve(base, m["checkpoint"])) if "checkpoint" in m else None
            entry.num_classes, entry.init_seed = m.get("num_classes"), m.get("init_seed", study.seed)
            entry.input_size, entry.mean, entry.std = m.get("input_size"), mean, std
            entry.raw_input = m.get("normalize") == "none"
        study.models.append(entry)
    return study


def _code_path(base: Path, arch: str) -> str:
    """An architecture in the user's code, ``path/to/file.py:callable``, with the file relative to the study
    file (like ``file:`` specs); any other architecture name as it is."""
    where, sep, attr = arch.rpartition(":")
    if not sep or not where.endswith(".py") or ":remove=" in arch:
        return arch
    return f"{_resolve(base, where)}:{attr}"
