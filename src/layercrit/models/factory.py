"""``create_model(spec)``: one entry point from a model spec string to a measurable model.

Specs: ``arch:<name>`` (fresh, seeded), ``timm:<name>`` (pretrained), ``torchvision:<name>[:<weights>]``
(pretrained), ``file:<path>`` with ``arch=`` (a .safetensors or state-dict checkpoint; a .safetensors
file written by layercrit records its architecture), and the kinds plug-ins register in
:mod:`layercrit.model_specs` (``zoo:<id>``, a model of the study's zoo, see ``layercrit.zoo``).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import timm
import torch
import torch.nn as nn
import torchvision.models as tvm

from ..errors import ConfigError, LayercritError, Message
from ..hub import hf_offline_if_unreachable, hub_host
from ..model_specs import get_spec_kind, register_spec_kind, spec_usages
from .bundle import ModelBundle, ModelOptions, ModelSource
from .checkpoint import checkpoint_info, load_into, load_state_dict
from .keymap import KeyMap, KeyMapping
from .options import no_known_normalization, normalize_arg, validate_model_options
from .blocks import remove_blocks
from .registry import AUTO, IMAGENET_MEAN, IMAGENET_STD, REMOVE_MARK, ArchSpec, list_archs, registered_arch
from .user_arch import USAGE, is_user_arch, last_linear_classes, load_user_arch
from .wrapper import NormalizedModel

log = logging.getLogger("layercrit")


def get_arch(name: str) -> ArchSpec:
    """Resolve an architecture name: a registered one (:mod:`.registry`), ``<arch>:remove=<block>,...`` (``<arch>``
    with those residual blocks removed, what ``layercrit compress`` saves), a callable in the user's code
    (``path/to/file.py:callable``, ``package.module:callable``), ``torchvision/<name>``, or a timm model name."""
    if REMOVE_MARK in name:
        return _variant(name)
    registered = registered_arch(name)
    if registered is not None:
        return registered
    if is_user_arch(name):
        return user_arch_spec(name)
    if name.startswith("torchvision/"):
        return _torchvision_arch(name.split("/", 1)[1])
    if timm.is_model(name):
        return _timm_arch(name)
    raise LayercritError(
        f"unknown architecture '{name}': use one of {', '.join(list_archs())}, "
        f"a timm model name (see timm.list_models()), torchvision/<name>, or your own code: {USAGE} "
        "(a function or class that builds the model)"
    )


def _variant(name: str) -> ArchSpec:
    base_name, _, blocks = name.partition(REMOVE_MARK)
    base = get_arch(base_name)
    names = [b for b in blocks.split(",") if b]

    def build(num_classes: int) -> nn.Module:
        # Built as the full architecture, then cut: the same RNG draws as the base for the layers kept.
        return remove_blocks(base.build(num_classes=num_classes), names)

    return dataclasses.replace(base, name=name, build=build)


def user_arch_spec(reference: str) -> ArchSpec:
    """The architecture a callable in the user's code builds: class count from its ``num_classes``
    default (else unknown), input size and normalization unknown (given when a model is created)."""
    arch = load_user_arch(reference)
    return ArchSpec(reference, arch.build, arch.default_num_classes(), None, None, None, source="user",
                    extra={"user_arch": arch}, normalization_known=False, code=arch.identity)


def _timm_arch(name: str) -> ArchSpec:
    cfg = timm.models.get_pretrained_cfg(name) or None
    num_classes = getattr(cfg, "num_classes", None) or 1000
    input_size = (getattr(cfg, "input_size", None) or (3, 224, 224))[-1]
    mean = tuple(getattr(cfg, "mean", None) or IMAGENET_MEAN)
    std = tuple(getattr(cfg, "std", None) or IMAGENET_STD)

    def build(num_classes: int) -> nn.Module:
        return timm.create_model(name, pretrained=False, num_classes=num_classes)

    return ArchSpec(name, build, num_classes, input_size, mean, std, source="timm")


def _torchvision_arch(name: str) -> ArchSpec:
    if name not in tvm.list_models():
        raise LayercritError(f"unknown torchvision model '{name}': see torchvision.models.list_models()")

    def build(num_classes: int) -> nn.Module:
        return tvm.get_model(name, weights=None, num_classes=num_classes)

    return ArchSpec(f"torchvision/{name}", build, 1000, 224, source="torchvision")


def build_seeded(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a fresh instance from ``seed`` alone, leaving the global RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def arch_factory(arch: ArchSpec, num_classes: int | None) -> Callable[[], nn.Module]:
    """Builds a freshly initialized network of ``arch`` with ``num_classes`` outputs (None: what a callable
    without a ``num_classes`` parameter builds)."""
    return lambda: arch.build(num_classes=num_classes)


def _floats(values: Sequence[float] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(v) for v in values)


def create_model(spec: str, *, arch: str | None = None, num_classes: int | None = None,
                 init_seed: int = 0, name: str | None = None, trust_pickle: bool = False,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 checkpoint: str | None = None, category: str | None = None, normalize: Any = AUTO,
                 key_map: Any = None) -> ModelBundle:
    """Resolve a model spec into a :class:`ModelBundle` (eval mode, on the CPU) that knows its source.

    Args:
        spec: what the model is: ``"arch:<name>"`` (an untrained instance of a registered, timm or torchvision
            architecture, or ``arch:path/to/file.py:callable``), ``"file:<checkpoint>"`` (with ``arch``),
            ``"zoo:<id>"`` (the study's models), or another registered spec kind.
        arch: the architecture of a ``file:`` checkpoint: a registered name, a timm name,
            ``torchvision/<name>``, or a callable in your own code (``path/to/file.py:callable``,
            ``package.module:callable``).
        num_classes: default from the weights (a layercrit file's record, else the output count of the
            checkpoint's last ``Linear``), else the architecture's.
        init_seed: the seed of an untrained (``arch:``) model's initialization.
        name: its model id in a results database (default: from the spec).
        trust_pickle: allow checkpoints that need arbitrary unpickling (only files you trust).
        mean: the input normalization's mean (the same as ``normalize=(mean, std)``).
        std: its standard deviation.
        checkpoint: for a ``zoo:`` model: its weights from a file instead of the zoo's download (a folder holding
            the files under their cache names, or comma-separated files where the model has several).
        category: its category in a results database (default: the zoo's, else none).
        normalize: the input normalization, ``(mean, std)``, or None (raw [0, 1] input, or a model that
            normalizes itself); the default takes the weights' or architecture's own, and is an error where
            none is known.
        key_map: for a ``file:`` checkpoint whose names differ from the architecture's: ``"auto"`` (pairs
            tensors by kind and shape in order, only where that is unique), a TOML file of rules, a rule
            ``"PATTERN=REPLACEMENT"`` or a list of rules and files (:mod:`layercrit.models.keymap`); the result
            is strict, said in one info line, and ``bundle.key_map`` (recorded in a run's config) holds it.

    Returns:
        A :class:`ModelBundle`: the network inside its normalization, a factory of fresh instances (what
        ``random`` resets draw from), its input size, class count, model id and :class:`ModelSource`.

    Examples:
        >>> import layercrit as lc
        >>> model = lc.create_model("arch:cifar_resnet50", name="untrained")
        >>> model.model_id, model.input_size, model.num_classes
        ('untrained', 32, 10)
        >>> model.source.spec
        'arch:cifar_resnet50'

        A checkpoint of an architecture in your own code, with the normalization its training used:

        >>> model = lc.create_model("file:resnet20.th", arch="my_models.py:resnet20",
        ...                         normalize=((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))  # doctest: +SKIP
    """
    key_map = _key_map_arg(key_map)
    mean, std, raw = normalize_arg(normalize, mean, std)
    checked = validate_model_options(num_classes, init_seed, mean, std)
    num_classes, init_seed = checked["num_classes"], checked["init_seed"]
    options = ModelOptions(arch, num_classes, init_seed, name, trust_pickle, _floats(checked["mean"]),
                           _floats(checked["std"]), checkpoint, category, None if raw else AUTO, key_map)
    if not isinstance(spec, str):
        raise ConfigError(f"{{spec}} must be a model spec string, got {type(spec).__name__}", ("spec",))
    kind_name, _, rest = spec.partition(":")
    kind = get_spec_kind(kind_name)
    if kind is None or not rest:
        usages = spec_usages()
        raise ConfigError(f"unknown model spec '{spec}': use {', '.join(usages[:-1])}, or {usages[-1]}",
                          ("arch",))
    if checkpoint is not None and not kind.takes_checkpoint:
        takes = " or ".join(spec_usages(taking_checkpoint=True)) or "no"
        raise ConfigError(f"{{checkpoint}} applies to {takes} models; for {spec} use file:<path> with {{arch}}",
                          ("checkpoint", "arch"))
    if key_map is not None and kind_name != "file":
        raise ConfigError(f"{{key_map}} applies to file: checkpoints; {spec} names its weights itself", ("key_map",))
    bundle = kind.create(rest, spec, options)
    return dataclasses.replace(bundle, source=ModelSource(spec, options), category=category or bundle.category)


def _key_map_arg(key_map: Any) -> str | tuple[str, ...] | None:
    """``key_map`` as ModelOptions keeps it (a string or a tuple of strings), checked at once."""
    if key_map is None:
        return None
    KeyMap.parse(key_map)  # a bad rule or file: an error before anything is loaded
    return str(key_map) if isinstance(key_map, (str, Path)) else tuple(str(k) for k in key_map)


def build_source(source: ModelSource) -> ModelBundle:
    """The model ``source`` describes, built again (e.g. in another process)."""
    return create_model(source.spec, **dataclasses.asdict(source.options))


def _bundle(net: nn.Module, a: ArchSpec, nc: int | None, spec: str, model_id: str, mean: Any, std: Any) -> ModelBundle:
    return ModelBundle(NormalizedModel(net, mean, std).eval(), arch_factory(a, nc), spec, a.name, nc, a.input_size,
                       model_id, arch_code=a.code)


def _normalization(a: ArchSpec, o: ModelOptions, what: str, recorded: tuple | None = None) -> tuple[Any, Any]:
    """(mean, std) to feed the model, (None, None) for raw input: the choice made (``o``), else what the
    weights record, else the architecture's own; an error where none of these is known."""
    if o.normalize is None:
        return None, None
    if o.mean is not None or o.std is not None:
        return o.mean, o.std
    if recorded is not None:
        return recorded  # (None, None): recorded as raw [0, 1] input
    if not a.normalization_known:
        raise no_known_normalization(what)
    return a.mean, a.std


def _classes(a: ArchSpec, o: ModelOptions, spec: str) -> int | None:
    nc = o.num_classes or a.num_classes
    if nc is None:
        ua = a.extra.get("user_arch")
        if ua is not None and not ua.accepts_num_classes():
            return _built_classes(a)
        raise ConfigError(f"{spec}: the class count of {a.name} is unknown (its num_classes parameter has no "
                          "default): give {num_classes}", ("num_classes",))
    return nc


def _built_classes(a: ArchSpec) -> int | None:
    """The class count an architecture builds on its own (a callable without num_classes): its last Linear's
    outputs; None for a network without one (a headless backbone), whose output size the measurement reads
    from a forward pass like a module given directly, and whose features ``output="module:..."`` compares."""
    return last_linear_classes(build_seeded(lambda: a.build(num_classes=None), 0))


def _arch(rest: str, spec: str, o: ModelOptions) -> ModelBundle:
    a = get_arch(rest)
    nc = _classes(a, o, spec)
    mean, std = _normalization(a, o, spec)
    net = build_seeded(arch_factory(a, nc), o.init_seed)
    return _bundle(net, a, nc, spec, o.name or _default_id(rest), mean, std)


def _default_id(arch: str) -> str:
    """A model id from an architecture name: ``models/resnet.py:resnet20`` -> ``resnet20``."""
    base, mark, removed = arch.partition(REMOVE_MARK)
    return base.rsplit(":", 1)[-1] + mark + removed if is_user_arch(base) else arch


def _file(rest: str, spec: str, o: ModelOptions) -> ModelBundle:
    recorded = checkpoint_info(rest)  # files written by layercrit record arch, classes, normalization
    arch = o.arch or recorded.arch
    if not arch:
        raise ConfigError(f"{spec} needs {{arch}} to know what network the weights belong to (a registered name, a "
                          "timm name, or your own code: path/to/file.py:callable)", ("arch",),
                          python={"arch": "arch=<architecture>"})
    a = get_arch(arch)
    model_id = o.name or Path(rest).stem
    mean, std = _normalization(a, o, f"{spec} with the architecture {arch}", recorded.normalization)
    state = load_state_dict(rest, trust_pickle=o.trust_pickle)
    notes = []
    mapping: KeyMapping | None = None
    if o.key_map is not None:  # names from another codebase: the model's names from here on (checked below)
        keys = KeyMap.parse(o.key_map)
        probe = build_seeded(lambda: a.build(num_classes=o.num_classes or recorded.num_classes or a.num_classes),
                             0) if keys.auto else None
        original, mapping = state, keys.pair(state, probe)
        state = mapping.apply(original)
    nc = o.num_classes or recorded.num_classes
    if nc is None:
        nc, head = _head_classes(a, state, spec)
        if head is not None and nc != a.num_classes:  # said where it differs from the architecture's default
            notes.append(f"{spec}: {nc} classes, from the checkpoint's {head}; {{num_classes}} to override")
    if o.mean is None and o.normalize is not None and recorded.normalization is None and a.source != "layercrit":
        notes.append(f"{spec}: input normalization mean {_show(a.mean)}, std {_show(a.std)} ({a.name}'s default); "
                     "give {normalize} if its training used another")
    net = build_seeded(arch_factory(a, nc), o.init_seed)
    if mapping is not None:
        mapping.check(original, net, f"checkpoint {rest}")  # names the checkpoint's tensors, not only the model's
        state = mapping.apply(original, net)
        notes.insert(0, mapping.summary(spec))
    load_into(net, state, rest)
    for note in notes:  # once the weights fit: an error stays the only line
        log.info(Message(note))
    bundle = _bundle(net, a, nc, spec, model_id, mean, std)
    return bundle if mapping is None else dataclasses.replace(bundle, key_map=mapping.record())


def _show(values: Sequence[float] | None) -> str:
    return ",".join(f"{v:g}" for v in values or ())


def _head_classes(a: ArchSpec, state: dict[str, torch.Tensor], spec: str) -> tuple[int | None, str | None]:
    """The class count of a checkpoint: the output count of its last ``Linear`` (whatever it is called),
    found by building the architecture once; and that weight, described (None: not from the checkpoint)."""
    ua = a.extra.get("user_arch")
    if ua is not None and not ua.accepts_num_classes():
        return _built_classes(a), None
    probe = build_seeded(lambda: a.build(num_classes=a.num_classes or 10), 0)
    heads = [n for n, m in probe.named_modules() if isinstance(m, nn.Linear)]
    weight = state.get(f"{heads[-1]}.weight") if heads else None
    if weight is None or weight.dim() != 2:
        if a.num_classes is None:
            raise ConfigError(f"{spec}: cannot tell the class count from the checkpoint (no weight for the last "
                              "Linear layer found): give {num_classes}", ("num_classes",))
        return a.num_classes, None
    nc = int(weight.shape[0])
    return nc, f"{heads[-1]}.weight ({nc} x {weight.shape[1]})"


def _timm(rest: str, spec: str, o: ModelOptions) -> ModelBundle:
    a = get_arch(rest)
    if a.source != "timm":
        raise LayercritError(f"{spec}: '{rest}' is not a timm model name (see timm.list_models())")
    nc = _classes(a, o, spec)
    net = _download("timm", rest, lambda: timm.create_model(rest, pretrained=True, num_classes=nc))
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    a = ArchSpec(a.name, a.build, nc, cfg.get("input_size", (3, a.input_size, a.input_size))[-1],
                 tuple(cfg.get("mean") or a.mean or IMAGENET_MEAN), tuple(cfg.get("std") or a.std or IMAGENET_STD),
                 source="timm")
    return _bundle(net, a, nc, spec, o.name or rest, *_normalization(a, o, spec))


def _torchvision(rest: str, spec: str, o: ModelOptions) -> ModelBundle:
    name, _, weights_name = rest.partition(":")
    a = get_arch(f"torchvision/{name}")
    enum = tvm.get_model_weights(name)
    try:
        weights = enum[weights_name or "DEFAULT"]
    except KeyError:
        raise LayercritError(
            f"unknown weights '{weights_name}' for torchvision:{name}: use one of {', '.join(w.name for w in enum)}"
        ) from None
    nc = len(weights.meta["categories"])
    if o.num_classes not in (None, nc):
        raise ConfigError(f"torchvision:{rest} has {nc} classes; {{num_classes}} {o.num_classes} does not fit",
                          ("num_classes",))
    net = _download("torchvision", rest, lambda: tvm.get_model(name, weights=weights))
    tf = weights.transforms()
    a = dataclasses.replace(a, num_classes=nc, input_size=tf.crop_size[0], mean=tuple(tf.mean), std=tuple(tf.std))
    return _bundle(net, a, nc, spec, o.name or name, *_normalization(a, o, spec))


def _download(kind: str, what: str, fn: Callable[[], nn.Module]) -> nn.Module:
    offline = False
    try:
        with hf_offline_if_unreachable() as offline:  # offline: fail at once instead of retrying for a minute
            return fn()
    except LayercritError:
        raise
    except Exception as e:
        if offline and kind == "timm":
            raise ConfigError(
                f"could not get pretrained weights for {kind}:{what}: {hub_host()[0]} cannot be reached (offline) "
                "and they are not in the local cache: connect to the internet, or save the weights to a file and "
                "use file:<path> {arch} <name>") from None
        first = str(e).splitlines()[0][:120] if str(e) else ""
        raise ConfigError(
            f"could not get pretrained weights for {kind}:{what} ({type(e).__name__}: {first}): "
            "connect to the internet, or save the weights to a file and use file:<path> {arch} <name>"
        ) from None


register_spec_kind("arch", _arch, usage="arch:<name>")
register_spec_kind("timm", _timm, usage="timm:<name>")
register_spec_kind("torchvision", _torchvision, usage="torchvision:<name>[:<weights>]")
register_spec_kind("file", _file, usage="file:<path> with {arch}")
