"""Which layers to reset: discovered generically, in the order the forward pass runs them.

A :class:`Unit` is what one reset changes: a layer here, or a residual block (see blocks.py).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from .. import validate
from ..errors import ConfigError
from ..models.state import eval_mode, hooks_removed
from ..patterns import select_names

# --types vocabulary -> module classes.
LAYER_TYPES: dict[str, tuple[type[nn.Module], ...]] = {
    "conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d),
    "linear": (nn.Linear,),
    "norm": (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm),
    "embedding": (nn.Embedding,),
}
DEFAULT_TYPES = validate.DEFAULT_TYPES  # the study's 54 layers of a ResNet-50


@dataclass(frozen=True)
class Unit:
    """What one reset changes: a layer (its own parameters) or a residual block (its branch)."""

    index: int  # position in the forward-execution order of all the model's units of the chosen kinds (a
    # selection keeps each unit's own position, so partial runs into one database order alike)
    name: str  # module name inside the unwrapped network, e.g. "layer1.0.conv1" or "layer1.0"
    kind: str  # "conv", "linear", ... for a layer; "block" for a residual block
    module_type: str  # e.g. "Conv2d", "Bottleneck"
    # What a reset changes, relative to the module: None = its own parameters (a layer); a block
    # unit lists its residual branch's parameters, and in ``remove`` those whose zeroing removes it.
    params: tuple[str, ...] | None = None
    remove: tuple[str, ...] = ()

    @property
    def level(self) -> str:
        """"layer" or "block" (the ``unit`` column of the results)."""
        return "block" if self.kind == "block" else "layer"

    def parameter_names(self, module: nn.Module) -> tuple[str, ...]:
        return self.params if self.params is not None else tuple(n for n, _ in module.named_parameters(recurse=False))


def _kind_of(module: nn.Module, types: tuple[str, ...]) -> str | None:
    for t in types:
        if isinstance(module, LAYER_TYPES[t]) and any(True for _ in module.parameters(recurse=False)):
            return t
    return None


def discover_layers(network: nn.Module, input_size: int, *, types: Sequence[str] = DEFAULT_TYPES,
                    patterns: list[str] | None = None, in_channels: int = 3) -> list[Unit]:
    """The layers :func:`layercrit.measure` would measure (``unit="layer"``), in forward-execution order.

    One forward pass on a dummy input records the call order with hooks (modules the forward pass never
    runs are left out).

    Args:
        network: the network (unwrapped: ``bundle.network`` for a :class:`~layercrit.ModelBundle`).
        input_size: the resolution of the dummy input.
        types: layer kinds with parameters: some of conv, linear, norm, embedding (default conv, linear).
        patterns: fnmatch globs over module names; a pattern starting with ``!`` excludes. Each pattern
            must match something.
        in_channels: channels of the dummy input.

    Returns:
        One :class:`~layercrit.resets.Unit` per layer (``name``, ``index``, ``kind``).

    Examples:
        >>> import torch.nn as nn
        >>> import layercrit as lc
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                     nn.Linear(8, 4))
        >>> [u.name for u in lc.discover_layers(net, 16)]
        ['0', '4']
        >>> [u.name for u in lc.discover_layers(net, 16, types=["conv", "linear", "norm"], patterns=["!4"])]
        ['0', '1']
    """
    unknown = [t for t in types if t not in LAYER_TYPES]
    if unknown:
        raise ConfigError(f"{{types}}: unknown layer kind(s) {', '.join(unknown)}: use {', '.join(LAYER_TYPES)}",
                          ("types",))
    candidates = {m: (name, kind) for name, m in network.named_modules()
                  if (kind := _kind_of(m, tuple(types)))}
    seen = forward_order(network, list(candidates), input_size, in_channels)
    names = [candidates[m] for m in seen]
    position = {n: i for i, (n, _) in enumerate(names)}
    names = select(names, patterns or [])
    return [Unit(position[n], n, k, type(network.get_submodule(n)).__name__) for n, k in names]


def forward_order(network: nn.Module, modules: list[nn.Module], input_size: int, in_channels: int) -> list[nn.Module]:
    """``modules`` in the order a forward pass on a dummy input first calls them (uncalled ones left out).
    The pass runs in eval mode; every submodule's own mode and the hooks are restored whatever happens."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_pre_hook(lambda mod, *_: order.append(mod)) for m in modules]
    p = next(network.parameters())
    with hooks_removed(hooks), eval_mode(network), torch.no_grad():
        network(torch.zeros(1, in_channels, input_size, input_size, device=p.device, dtype=p.dtype))
    return list(dict.fromkeys(order))  # first call wins; keeps order


def select(names: list[tuple[str, str]], patterns: list[str]) -> list[tuple[str, str]]:
    kept = set(select_names([n for n, _ in names], patterns, what="layer",
                            hint="list layers with `layercrit layers --model ...`"))
    names = [(n, k) for n, k in names if n in kept]
    if not names:
        raise ConfigError("the layer patterns leave no layer to measure: loosen {layers}", ("layers",))
    return names
