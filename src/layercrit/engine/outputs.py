"""What a measurement compares with the unmodified model (``output``): the model's class scores (``"probs"``,
``"logits"``), the output of one of its modules (``"module:<name>"``), or what a callable computes.

A module's output is taken with a forward hook on that module of the network; the hook stops the forward
pass there (nothing after it can change the captured value), so the naive engine computes no more than
needed. The cached engine (graph.py) reads the same value from the traced graph, where the module is kept
as one node. A module whose output cannot change when a layer is reset (the layer runs after it) makes
that layer's criticality 0 by construction: :meth:`Output.probe` finds such layers and the plan refuses them.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..models import NormalizedModel
from .config import compares_classes, output_label

MODULE = "module:"


class _Captured(Exception):
    """Raised by the capturing hook: the module's output is in hand, the rest of the pass is not needed."""


class Output:
    """How to get the compared tensor from the model (inside its normalization wrapper) for a batch."""

    def __init__(self, output: str | Callable[..., Any], net: NormalizedModel):
        self.label = output_label(output)
        self.classes = compares_classes(output)  # class scores: the class metrics are defined
        self.compare = str(output) if self.classes else "features"  # how metrics.ResetMetrics compares
        self.net = net
        self.fn = None if isinstance(output, str) else output
        name = output[len(MODULE):] if isinstance(output, str) and output.startswith(MODULE) else None
        self.module_name = name
        self.module = None if name is None else find_module(net.model, name)

    @property
    def graph_path(self) -> str | None:
        """The module's path inside the wrapper (the traced graph's name for it), or None."""
        return None if self.module_name is None else "model." + self.module_name

    @property
    def traceable(self) -> bool:
        """Whether the cached engine can compute it (a callable is opaque to the graph)."""
        return self.fn is None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The compared tensor for the batch ``x`` (the wrapper's input: images in [0, 1])."""
        if self.fn is not None:
            return _check_tensor(self.fn(self.net.model, normalized(self.net, x)), self.label, len(x))
        if self.module is None:
            return self.net(x)
        box: list[Any] = []

        def hook(_module: nn.Module, _inputs: Any, out: Any) -> None:
            box.append(out)
            raise _Captured

        handle = self.module.register_forward_hook(hook)
        try:
            self.net(x)
        except _Captured:
            pass
        finally:
            handle.remove()
        if not box:
            raise ConfigError(f"{{output}} {self.label}: the module did not run in the forward pass", ("output",))
        out: torch.Tensor = box[0]
        return out

    def probe(self, x: torch.Tensor, unit_names: Sequence[str] = ()) -> tuple[torch.Tensor, list[str]]:
        """Run the model once on ``x`` and check the output: a tensor with one row per image (a module's: it
        runs exactly once). Returns it and the units (of ``unit_names``) that start running only after the
        output module has finished, so that a reset of them cannot change it."""
        if self.module is None:
            out = self(x)
            return _check_tensor(out, self.label, len(x)), []
        assert self.module_name is not None
        calls: list[Any] = []
        clock = {"t": 0}
        first_start: dict[str, int] = {}
        done_at: list[int] = []

        def tick() -> int:
            clock["t"] += 1
            return clock["t"]

        def captured(_module: nn.Module, _inputs: Any, out: Any) -> None:
            calls.append(out)
            done_at.append(tick())

        def starts(name: str) -> Callable[..., None]:
            def pre(_module: nn.Module, _inputs: Any) -> None:
                first_start.setdefault(name, tick())
            return pre

        handles = [self.module.register_forward_hook(captured)]
        for name in unit_names:
            handles.append(self.net.model.get_submodule(name).register_forward_pre_hook(starts(name)))
        try:
            self.net(x)
        finally:
            for h in handles:
                h.remove()
        if not calls:
            raise ConfigError(f"{{output}} {self.label}: the module does not run in the network's forward pass: "
                              "choose one that does", ("output",))
        if len(calls) > 1:
            raise ConfigError(f"{{output}} {self.label}: the module runs {len(calls)} times per forward pass (a "
                              "shared module), so which of its outputs is meant is ambiguous: choose a module that "
                              "runs once (in Python, or a callable that computes the output)", ("output",))
        after = [n for n in unit_names if n in first_start and first_start[n] > done_at[0]]
        return _check_tensor(calls[0], self.label, len(x)), after


def normalized(net: NormalizedModel, x: torch.Tensor) -> torch.Tensor:
    """The network's input for the wrapper's input ``x``: its normalization applied (if it has one)."""
    return (x - net.mean) / net.std if net.normalize else x


def find_module(network: nn.Module, name: str) -> nn.Module:
    """The submodule ``name`` of ``network``; a ConfigError naming {output} (with the closest names) if absent."""
    names = [n for n, _ in network.named_modules() if n]
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(MODULE + c for c in close)}?" if close else \
            f"its modules include {', '.join(MODULE + n for n in names[-3:]) or 'none'}"
        raise ConfigError(f"{{output}} {MODULE}{name}: the network ({type(network).__name__}) has no module named "
                          f"'{name}': {hint}", ("output",))
    return network.get_submodule(name)


def _check_tensor(out: Any, label: str, n: int) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"{{output}} {label} gives a {type(out).__name__}, not a tensor: choose a module that "
                          "returns one tensor (in Python, or a callable that picks it)", ("output",))
    if out.dim() == 0 or out.shape[0] != n:
        raise ConfigError(f"{{output}} {label} gives shape {tuple(out.shape)} for {n} image(s): it must have one "
                          "row per image (the batch dimension first)", ("output",))
    return out
