"""Layer names across sources: matching, network order, readable labels, network stages, architectures.

Our databases name layers as the unwrapped network does (``layer1.0.conv1``); the original
study's CSV names them inside its normalization wrapper (``model.layer1.0.conv1``).

Models of different architectures can share one report: each model belongs to an *architecture
group* (the models whose measured layers are the same names in the same forward order), and
layers are ordered, staged and shown per group, never interleaved across groups.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

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

    ``layers`` is a frame with a ``layer`` column (and optionally ``model_id`` and ``layer_index``,
    the forward-pass position our databases record among each run's measured layers) or plain
    names. When every name is a torchvision-ResNet name they sort by stage, block and operator, so
    the study's CSV (which records no order) lines up with our databases; otherwise each model's
    recorded order is merged (a layer comes after every layer some model ran before it), and names
    without a recorded position follow in the order first seen.
    """
    frame = layers if isinstance(layers, pd.DataFrame) else pd.DataFrame({"layer": list(layers)})
    names = list(dict.fromkeys(frame["layer"]))
    keys = {n: resnet_key(n) for n in names}
    if all(k is not None for k in keys.values()):
        return sorted(names, key=lambda n: keys[n] or (0, 0, 0))
    if "layer_index" not in frame:
        return names
    known = frame.dropna(subset=["layer_index"])
    by_model = known.groupby("model_id", sort=False) if "model_id" in known else [(None, known)]
    sequences = [list(dict.fromkeys(g.sort_values("layer_index", kind="stable")["layer"])) for _, g in by_model]
    return _merge_orders(sequences, names)


def _merge_orders(sequences: list[list[str]], names: list[str]) -> list[str]:
    """One order consistent with every sequence (topological, ties broken by the longest sequence,
    then first appearance); names in no sequence go last."""
    sequences = sorted(sequences, key=len, reverse=True)
    rank: dict[str, int] = {}
    for seq in sequences:
        for n in seq:
            rank.setdefault(n, len(rank))
    after: dict[str, set[str]] = {n: set() for n in rank}
    for seq in sequences:
        for a, b in zip(seq, seq[1:]):
            after[b].add(a)
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(rank):
        ready = [n for n in rank if n not in placed and after[n] <= placed]
        n = min(ready or [m for m in rank if m not in placed], key=rank.__getitem__)  # a cycle: first by rank
        order.append(n)
        placed.add(n)
    return order + [n for n in names if n not in placed]


def assign_stages(names: list[str], types: list[str | None] | None = None) -> list[str]:
    """Stages of one architecture's layers, given in forward order.

    ``layer<N>.`` names are stage N (torchvision and CIFAR ResNets). The classifier is "head"
    whatever it is called: the last ``Linear`` in forward order (or, where types are unknown, the
    last layer) when it lies after every staged layer. Layers before the first staged layer are
    the "stem"; without any staged layer the first layer is the stem. Everything else is "other".
    """
    types = list(types) if types is not None else [None] * len(names)
    stages = [f"stage {int(m[1])}" if (m := _STAGE.match(n)) else OTHER for n in names]
    staged = [i for i, st in enumerate(stages) if st != OTHER]
    first = staged[0] if staged else 1
    last = staged[-1] if staged else 0
    for i in range(min(first, len(names))):
        stages[i] = STEM
    linear = [i for i, t in enumerate(types) if t == "Linear"]
    head = linear[-1] if linear else (len(names) - 1 if names and all(t is None for t in types) else None)
    if head is not None and head > last and stages[head] in (OTHER, STEM) and (head > 0 or len(names) == 1):
        stages[head] = HEAD
    return stages


def stage_label(name: str, stage: str, kernels: dict[str, str] | None = None) -> str:
    """Readable column name for a staged layer: the ResNet labels of :func:`layer_label`, ``[head] linear``,
    ``[stem] patch_embed.proj``; other names as they are."""
    if stage == HEAD and name != "fc":
        return f"[head] {name}"
    if stage == STEM and name != "conv1":
        return f"[stem] {name}"
    return layer_label(name, kernels)


def layer_frame(layers: pd.DataFrame | Iterable[str]) -> pd.DataFrame:
    """One row per layer in network order: ``layer``, ``label``, ``stage``, ``position`` (one architecture)."""
    names = layer_order(layers)
    types: list[str | None] | None = None
    if isinstance(layers, pd.DataFrame) and "layer_type" in layers:
        known = layers.dropna(subset=["layer_type"]).drop_duplicates("layer").set_index("layer")["layer_type"]
        types = [known.get(n) for n in names]
    kernels = resnet_kernels(names)
    stages = assign_stages(names, types)
    return pd.DataFrame({"layer": names, "label": [stage_label(n, st, kernels) for n, st in zip(names, stages)],
                         "stage": stages, "position": range(len(names))})


def architecture_groups(rows: pd.DataFrame, arch_names: dict[str, str] | None = None) -> dict[str, str]:
    """model id -> architecture group label, for ``rows`` with model_id and layer.

    A model joins the group whose layers include all of its own (a run of some layers of the same
    network, or the study's CSV beside our database) unless both record different architecture
    names (``arch_names``: model id -> name); otherwise it starts a group. Groups are labelled by the
    name most of their models record, else "architecture 1", "architecture 2", ... (numbered in order
    of first appearance); a repeated label gets the layer count appended.
    """
    arch_names = arch_names or {}
    layer_sets = {str(m): set(g["layer"]) for m, g in rows.groupby("model_id", sort=False)}
    first_seen = list(layer_sets)
    groups: list[dict] = []  # {"layers": set, "archs": set, "models": list}
    for m in sorted(first_seen, key=lambda m: -len(layer_sets[m])):  # largest first: subsets join them
        arch = arch_names.get(m)
        home = next((g for g in groups if layer_sets[m] <= g["layers"]
                     and (arch is None or not g["archs"] or g["archs"] == {arch})), None)
        if home is None:
            home = {"layers": set(), "archs": set(), "models": []}
            groups.append(home)
        home["layers"] |= layer_sets[m]
        home["archs"] |= {arch} if arch else set()
        home["models"].append(m)
    groups.sort(key=lambda g: min(first_seen.index(m) for m in g["models"]))
    labels = []
    for i, g in enumerate(groups, 1):
        names = [arch_names[m] for m in g["models"] if arch_names.get(m)]
        labels.append(max(sorted(set(names)), key=names.count) if names else f"architecture {i}")
    for i, label in enumerate(labels):
        if labels.count(label) > 1:
            labels[i] = f"{label} ({len(groups[i]['layers'])} layers)"
    return {m: label for g, label in zip(groups, labels) for m in g["models"]}
