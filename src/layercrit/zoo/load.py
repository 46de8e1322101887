"""Building a zoo model: file(s) -> layout converter -> strict load into the registered architecture.

:func:`create_zoo_bundle` is what ``create_model("zoo:<id>")`` runs (the zoo registers the ``zoo``
spec kind in :mod:`layercrit.models.specs`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch.nn as nn

from ..errors import ConfigError, LayercritError
from ..models.bundle import ModelBundle, ModelOptions
from ..models.checkpoint import key_mismatch
from ..models.factory import arch_factory, build_seeded
from ..models.factory import get_arch
from ..models.wrapper import NormalizedModel
from .fetch import expected_paths, fetch_model, pretrained_state
from .layouts import get_layout, read_checkpoint
from .registry import ZooModel, get_zoo_model


@dataclass
class LoadReport:
    files: list[str]  # what was read (paths, or the timm / torchvision source)
    loaded: int  # tensors loaded into the network
    dropped: list[str] = field(default_factory=list)  # documented ignorable keys the layout dropped
    absent: list[str] = field(default_factory=list)  # ignorable buffers the file lacks (kept as initialized)


def load_zoo_network(model_id: str, checkpoint: str | Path | Sequence[str | Path] | None = None, *,
                     trust_pickle: bool = False, download: bool = True,
                     progress: bool = True) -> tuple[nn.Module, ZooModel, LoadReport]:
    """The trained network of zoo model ``model_id`` (unwrapped, eval mode), its entry and what was loaded.

    ``checkpoint``: a file, or a folder holding the files under their cache names, or (backbone + head
    models) two files as a list or ``"BACKBONE,HEAD"``. Without it, the cache is used (downloading
    what is missing when ``download``).
    """
    entry = get_zoo_model(model_id)
    layout = get_layout(entry.layout)
    if checkpoint is not None:
        paths = checkpoint_paths(entry, checkpoint, len(layout.roles))
    elif entry.files:
        cached = expected_paths(entry)
        if not download and not all(p.is_file() for p in cached.values()):
            missing = next(p for p in cached.values() if not p.is_file())
            raise LayercritError(f"{entry.id} is not in the cache ({missing}): run `layercrit zoo fetch {entry.id}`")
        paths = list(fetch_model(entry, progress=progress).values())
    else:
        paths = []
    if paths:
        if len(paths) != len(layout.roles):
            raise LayercritError(f"zoo model {entry.id} needs {len(layout.roles)} files ({', '.join(layout.roles)}), "
                                 f"got {len(paths)}")
        objs = [read_checkpoint(p, safe_globals=layout.safe_globals, trust_pickle=trust_pickle) for p in paths]
        files = [str(p) for p in paths]
    else:  # timm / torchvision weights through those libraries
        objs = [pretrained_state(entry, s, progress=progress) for s in entry.sources]
        files = [s.describe() for s in entry.sources]
    state, dropped = layout.convert(*objs)

    arch = get_arch(entry.arch)
    net = build_seeded(lambda: arch.build(num_classes=entry.num_classes), 0)
    absent = strict_load(net, state, entry, " + ".join(files))
    return net.eval(), entry, LoadReport(files, len(state), dropped, absent)


def create_zoo_bundle(model_id: str, spec: str, o: ModelOptions) -> ModelBundle:
    """The bundle of ``zoo:<model_id>``: the trained network, normalized as the zoo entry says; random
    resets draw from its architecture's own initializer."""
    entry = get_zoo_model(model_id)
    if o.num_classes not in (None, entry.num_classes):  # before any download
        raise ConfigError(f"zoo:{model_id} has {entry.num_classes} classes; "
                          f"{{num_classes}} {o.num_classes} does not fit", ("num_classes",))
    net, entry, _ = load_zoo_network(model_id, o.checkpoint, trust_pickle=o.trust_pickle)
    a = get_arch(entry.arch)
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    if (o.mean is None and o.std is None and not entry.normalized) or o.normalize is None:
        mean, std = None, None  # the network takes raw [0, 1] input (or --normalize none said so)
    else:
        mean, std = (a.mean if o.mean is None else o.mean), (a.std if o.std is None else o.std)
    model = NormalizedModel(net, mean, std).eval()
    return ModelBundle(model, arch_factory(a, entry.num_classes), spec, a.name, entry.num_classes, a.input_size,
                       o.name or entry.id, entry.category)


def checkpoint_paths(entry: ZooModel, checkpoint, count: int) -> list[Path]:
    if isinstance(checkpoint, (list, tuple)):
        paths = [Path(p) for p in checkpoint]
    else:
        text = str(checkpoint)
        path = Path(text)
        if path.is_dir():
            if not entry.files:
                raise ConfigError(f"{{checkpoint}} for {entry.id} must be a file (a state dict of "
                                  f"{entry.source_text}), not a folder")
            paths = [path / s.filename for s in entry.files if s.filename]  # (every file source has one)
        elif "," in text and not path.exists():
            paths = [Path(p) for p in text.split(",")]
        else:
            paths = [path]
    if len(paths) != count:
        roles = ", ".join(get_layout(entry.layout).roles)
        raise ConfigError(f"zoo model {entry.id} needs {count} checkpoint files ({roles}, in that order; "
                          "{checkpoint} takes them comma-separated), or a folder holding "
                          + " and ".join(s.filename or "?" for s in entry.files))
    for p in paths:
        if not p.is_file():
            raise LayercritError(f"checkpoint not found: {p}: check the path")
    return paths


def strict_load(net: nn.Module, state: dict, entry: ZooModel, source: str) -> list[str]:
    """Load ``state`` into ``net``; any missing, unexpected or misshapen key is an error naming them.

    Returns the ignorable buffers (``num_batches_tracked``) the file lacks.
    """
    problem = key_mismatch(net, state)
    if problem:
        raise LayercritError(f"{source} does not fit zoo model {entry.id} ({entry.layout} layout; {problem}): "
                             f"check that it is the file of {entry.source_text}")
    net.load_state_dict(state, strict=False)  # strictness checked above, with ignorable buffers allowed
    return [k for k in net.state_dict() if k not in state]
