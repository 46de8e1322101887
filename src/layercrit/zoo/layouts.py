"""Checkpoint layouts of the zoo: safe reading of a file, and one converter per layout.

A converter turns the unpickled file(s) into a torchvision-named state dict and returns the keys
it dropped on purpose (documented ignorable keys only). It never drops anything else: keys it
cannot place are passed through, so the strict load that follows names them as unexpected.

Reading is safe: ``torch.load(weights_only=True)``; a layout may allow extra classes via
``safe_globals`` (scoped to that one load with ``torch.serialization.safe_globals``). None of the
built-in layouts needs any: their files hold dicts, tensors and plain Python values only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..errors import LayercritError
from ..models.checkpoint import read_checkpoint  # noqa: F401  (re-exported: the zoo's reader)

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Layout:
    name: str
    convert: Callable[..., tuple[State, list[str]]]  # convert(obj per role) -> (state dict, dropped keys)
    description: str
    roles: tuple[str, ...] = ("weights",)  # files, in the order convert takes them
    safe_globals: tuple = ()  # classes (or functions) this layout's files may hold besides the torch defaults


_LAYOUTS: dict[str, Layout] = {}


def register_layout(name: str, convert: Callable[..., tuple[State, list[str]]] | None = None, *, description: str,
                    roles: tuple[str, ...] = ("weights",), safe_globals=()) -> Any:
    """Register ``convert(*objs) -> (state_dict, dropped_keys)`` as checkpoint layout ``name``: a call,
    ``register_layout("mine", convert, description=...)``, or a decorator above the function."""

    def decorator(fn):
        _LAYOUTS[name] = Layout(name, fn, description, tuple(roles), tuple(safe_globals))
        return fn

    return decorator(convert) if convert is not None else decorator


def get_layout(name: str) -> Layout:
    if name not in _LAYOUTS:
        raise LayercritError(f"unknown checkpoint layout '{name}': use one of {', '.join(sorted(_LAYOUTS))} "
                             "or register one with layercrit.zoo.register_layout")
    return _LAYOUTS[name]


def list_layouts() -> list[str]:
    return sorted(_LAYOUTS)


# --- reading ------------------------------------------------------------------------------------------------

# --- building blocks of converters --------------------------------------------------------------------------

def _dict(obj: Any, what: str) -> dict:
    if not isinstance(obj, dict):
        raise LayercritError(f"the {what} holds a {type(obj).__name__}, not a dict: is it the right file?")
    return obj


def _under(obj: Any, key: str, what: str) -> dict:
    """``obj[key]``, which must be a dict (a required nesting key of the layout)."""
    obj = _dict(obj, what)
    if not isinstance(obj.get(key), dict):
        keys = ", ".join(map(str, list(obj)[:8]))
        raise LayercritError(f"the {what} has no dict under key '{key}' (its keys: {keys}): is it the right file?")
    return obj[key]


def _first_under(obj: Any, keys: tuple[str, ...], what: str) -> dict:
    """The dict under the first of ``keys`` present, else ``obj`` itself (a bare state dict)."""
    obj = _dict(obj, what)
    return next((obj[k] for k in keys if isinstance(obj.get(k), dict)), obj)


def _tensors(obj: dict, what: str) -> State:
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise LayercritError(f"the {what} is not a state dict: {', '.join(bad[:5])} are not tensors")
    return dict(obj)


def _strip(state: State, prefix: str, what: str) -> State:
    """Remove ``prefix`` from each key that has it. Where the layout requires the prefix, keys without
    it stay as they are, so that the strict load names them as unexpected."""
    out: State = {}
    for k, v in state.items():
        new = k[len(prefix):] if k.startswith(prefix) else k
        if new in out:
            raise LayercritError(f"the {what} holds both '{prefix}{new}' and '{new}': is it the right file?")
        out[new] = v
    return out


def _drop(state: State, is_ignorable: Callable[[str], bool]) -> tuple[State, list[str]]:
    dropped = [k for k in state if is_ignorable(k)]
    return {k: v for k, v in state.items() if not is_ignorable(k)}, dropped


def _merge(backbone: State, head: State) -> State:
    both = sorted(set(backbone) & set(head))
    if both:
        raise LayercritError(f"backbone and head files both hold {', '.join(both[:5])}: are they the right files?")
    return {**backbone, **head}


def _linear_head(obj: Any) -> State:
    """A linear-probe head file: dict key ``state_dict``, ``module.linear.*`` -> ``fc.*``."""
    head = _tensors(_under(obj, "state_dict", "head file"), "head file's state_dict")
    return {("fc." + k[len("module.linear."):]) if k.startswith("module.linear.") else k: v for k, v in head.items()}


# --- the layouts of ZOO.md ----------------------------------------------------------------------------------

@register_layout("torchvision", description="a bare state dict with torchvision/timm ResNet-50 names")
def _torchvision(obj) -> tuple[State, list[str]]:
    return _tensors(_dict(obj, "checkpoint"), "checkpoint"), []


@register_layout("madrylab", description="dict key 'model'; classifier keys prefixed 'module.model.'; "
                                         "'module.attacker.*' and 'module.normalizer.*' dropped")
def _madrylab(obj) -> tuple[State, list[str]]:
    # The AttackerModel wrapper holds the classifier twice (model, attacker.model) plus the
    # normalizer's mean/std buffers; only module.model.* is the classifier.
    state = _tensors(_under(obj, "model", "checkpoint"), "checkpoint's 'model'")
    state, dropped = _drop(state, lambda k: k.startswith(("module.attacker.", "module.normalizer.")))
    return _strip(state, "module.model.", "checkpoint"), dropped


@register_layout("state_dict", description="optionally under dict key 'state_dict'; keys may be prefixed 'module.'")
def _state_dict(obj) -> tuple[State, list[str]]:
    state = _tensors(_first_under(obj, ("state_dict",), "checkpoint"), "checkpoint")
    return _strip(state, "module.", "checkpoint"), []


@register_layout("generic", description="under the first of dict keys 'state_dict', 'model_state_dict', "
                                        "'online_backbone', 'model', else bare; keys may be prefixed 'module.'")
def _generic(obj) -> tuple[State, list[str]]:
    keys = ("state_dict", "model_state_dict", "online_backbone", "model")
    state = _tensors(_first_under(obj, keys, "checkpoint"), "checkpoint")
    return _strip(state, "module.", "checkpoint"), []


@register_layout("module_model", description="dict key 'model'; keys prefixed 'module.' (a training wrapper)")
def _module_model(obj) -> tuple[State, list[str]]:
    state = _tensors(_under(obj, "model", "checkpoint"), "checkpoint's 'model'")
    return _strip(state, "module.", "checkpoint"), []


@register_layout("tsbias", description="dict key 'state_dict'; keys prefixed 'module.'; every key containing "
                                       "'aux_bn' dropped (auxiliary BatchNorms used only in training)")
def _tsbias(obj) -> tuple[State, list[str]]:
    state = _tensors(_under(obj, "state_dict", "checkpoint"), "checkpoint's 'state_dict'")
    state, dropped = _drop(state, lambda k: "aux_bn" in k)
    return _strip(state, "module.", "checkpoint"), dropped


@register_layout("dino", roles=("backbone", "head"),
                 description="backbone: bare torchvision names without fc; head: dict key 'state_dict', "
                             "'module.linear.*' -> 'fc.*'")
def _dino(backbone, head) -> tuple[State, list[str]]:
    return _merge(_tensors(_dict(backbone, "backbone file"), "backbone file"), _linear_head(head)), []


@register_layout("swav", roles=("backbone", "head"),
                 description="backbone: keys prefixed 'module.', 'projection_head.*' and 'prototypes.*' dropped "
                             "(SwAV's training heads); head: dict key 'state_dict', 'module.linear.*' -> 'fc.*'")
def _swav(backbone, head) -> tuple[State, list[str]]:
    state = _tensors(_first_under(backbone, ("state_dict",), "backbone file"), "backbone file")
    state = _strip(state, "module.", "backbone file")
    state, dropped = _drop(state, lambda k: k.startswith(("projection_head.", "prototypes.")))
    return _merge(state, _linear_head(head)), dropped


# SimCLRv2 converted from TensorFlow (Separius/SimCLRv2-Pytorch): each BatchNorm sits inside a
# BatchNormRelu Sequential (hence the extra ".0"), each bottleneck is one Sequential
# [conv, bnrelu, conv, bnrelu, conv, bnrelu], and the downsample is "projection".
_SIMCLR_RULES = [
    (re.compile(r"^net\.0\.0\.weight$"), lambda m: "conv1.weight"),
    (re.compile(r"^net\.0\.1\.0\.(\w+)$"), lambda m: f"bn1.{m[1]}"),
    (re.compile(r"^net\.([1-4])\.blocks\.(\d+)\.net\.([024])\.weight$"),
     lambda m: f"layer{m[1]}.{m[2]}.conv{int(m[3]) // 2 + 1}.weight"),
    (re.compile(r"^net\.([1-4])\.blocks\.(\d+)\.net\.([135])\.0\.(\w+)$"),
     lambda m: f"layer{m[1]}.{m[2]}.bn{int(m[3]) // 2 + 1}.{m[4]}"),
    (re.compile(r"^net\.([1-4])\.blocks\.(\d+)\.projection\.shortcut\.weight$"),
     lambda m: f"layer{m[1]}.{m[2]}.downsample.0.weight"),
    (re.compile(r"^net\.([1-4])\.blocks\.(\d+)\.projection\.bn\.0\.(\w+)$"),
     lambda m: f"layer{m[1]}.{m[2]}.downsample.1.{m[3]}"),
]


def simclrv2_name(key: str) -> str:
    """torchvision name of a SimCLRv2 (PyTorch conversion) key; unknown keys unchanged (``fc.*`` stays)."""
    for pattern, rename in _SIMCLR_RULES:
        m = pattern.match(key)
        if m:
            return rename(m)
    return key


@register_layout("simclrv2", description="dict key 'resnet' with TF-style names (net.0.* stem, "
                                         "net.N.blocks.M.net.K.* blocks, projection.* downsample) renamed to "
                                         "torchvision names; the supervised head is its 'fc.*'; 'head' (the "
                                         "contrastive projection head) is not read")
def _simclrv2(obj) -> tuple[State, list[str]]:
    state = _tensors(_under(obj, "resnet", "checkpoint"), "checkpoint's 'resnet'")
    out: State = {}
    for k, v in state.items():
        new = simclrv2_name(k)
        if new in out:
            raise LayercritError(f"the checkpoint maps two keys to '{new}': is it the right file?")
        out[new] = v
    return out, []
