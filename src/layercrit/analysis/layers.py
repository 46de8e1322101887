"""Layer names across sources: matching, network order, readable labels and network stages.

Our databases name layers as the unwrapped network does (``layer1.0.conv1``); the original
study's CSV names them inside its normalization wrapper (``model.layer1.0.conv1``).
"""
from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

PAPER_PREFIX = "model."
STEM, HEAD, OTHER = "stem", "head", "other"

# torchvision ResNet block layers: layer<stage>.<block>.conv<k> or its shortcut layer<stage>.<block>.downsample.0
_BLOCK = re.compile(r"^layer(\d+)\.(\d+)\.(?:conv(\d+)|(downsample)\.0)$")
_STAGE = re.compile(r"^layer(\d+)\.")


def strip_prefix(name: str) -> str:
    """``model.layer1.0.conv1`` (the study's CSV) -> ``layer1.0.conv1`` (ours)."""
    return name[len(PAPER_PREFIX):] if name.startswith(PAPER_PREFIX) else name


def resnet_key(name: str) -> tuple[int, int, int] | None:
    """Sort key of a torchvision-ResNet layer name, or None for other names."""
    if name == "conv1":
        return (0, 0, 0)
    if name == "fc":
        return (10**6, 0, 0)
    m = _BLOCK.match(name)
    if m is None:
        return None
    # a block's forward pass runs its shortcut after its last convolution
    op = 10**3 if m[4] else int(m[3])
    return (int(m[1]), int(m[2]), op)


def layer_stage(name: str) -> str:
    """Network stage of a layer: stem, stage N, head, or other (non-ResNet names)."""
    if name == "conv1":
        return STEM
    if name == "fc":
        return HEAD
    m = _STAGE.match(name)
    return f"stage {int(m[1])}" if m else OTHER


def stage_sort_key(stage: str) -> tuple[int, str]:
    if stage == STEM:
        return (0, stage)
    if stage.startswith("stage "):
        return (int(stage.split()[1]), stage)
    return (10**6 if stage == HEAD else 10**6 + 1, stage)


def ordered_stages(stages: Iterable[str]) -> list[str]:
    return sorted(set(stages), key=stage_sort_key)


def resnet_kernels(names: Iterable[str]) -> dict[str, str]:
    """Kernel size of each block convolution implied by the ResNet layout, by operator name.

    Bottleneck blocks (those with a ``conv3``) are 1x1-3x3-1x1, basic blocks 3x3-3x3. The stem
    is left out: it is 7x7 in the ImageNet variant and 3x3 in the CIFAR one, which names alone
    cannot tell apart.
    """
    names = list(names)
    if not any(_BLOCK.match(n) for n in names):
        return {}
    if any((m := _BLOCK.match(n)) and m[3] == "3" for n in names):
        return {"conv1": "1x1", "conv2": "3x3", "conv3": "1x1"}
    return {"conv1": "3x3", "conv2": "3x3"}


def layer_label(name: str, kernels: dict[str, str] | None = None) -> str:
    """Readable column name: ``[0] stem``, ``[1.0] conv2 3x3``, ``[1.0] downsample``, ``[head] fc``."""
    if name == "conv1":
        return "[0] stem"
    if name == "fc":
        return "[head] fc"
    m = _BLOCK.match(name)
    if m is None:
        return name
    if m[4]:
        op = "downsample"
    else:
        op = f"conv{m[3]}"
        kernel = (kernels or {}).get(op)
        op = f"{op} {kernel}" if kernel else op
    return f"[{m[1]}.{m[2]}] {op}"


def layer_order(layers: pd.DataFrame | Iterable[str]) -> list[str]:
    """Layer names in network order.

    ``layers`` is a frame with a ``layer`` column (and optionally ``layer_index``, the
    forward-pass position our databases record) or plain names. When every name is a
    torchvision-ResNet name they sort by stage, block and operator, so the study's CSV (which
    records no order) lines up with our databases; otherwise by ``layer_index`` where known,
    and names without one follow in the order first seen.
    """
    if isinstance(layers, pd.DataFrame):
        names = list(dict.fromkeys(layers["layer"]))
        index = (layers.groupby("layer")["layer_index"].min() if "layer_index" in layers
                 else pd.Series(dtype=float))
    else:
        names = list(dict.fromkeys(layers))
        index = pd.Series(dtype=float)
    keys = {n: resnet_key(n) for n in names}
    if all(k is not None for k in keys.values()):
        return sorted(names, key=keys.__getitem__)
    seen = {n: i for i, n in enumerate(names)}

    def key(n: str):
        idx = index.get(n, np.nan)
        return (0, float(idx), seen[n]) if pd.notna(idx) else (1, 0.0, seen[n])

    return sorted(names, key=key)


def layer_frame(layers: pd.DataFrame | Iterable[str]) -> pd.DataFrame:
    """One row per layer in network order: ``layer``, ``label``, ``stage``, ``position``."""
    names = layer_order(layers)
    kernels = resnet_kernels(names)
    return pd.DataFrame({"layer": names, "label": [layer_label(n, kernels) for n in names],
                         "stage": [layer_stage(n) for n in names], "position": range(len(names))})
