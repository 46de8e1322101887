"""Change a module temporarily, restore it always: every "with ...:" that the measurement puts a model through.

Each context manager here restores what it changed in a ``finally``, so an error or Ctrl-C inside leaves
the caller's model as it was: modes per submodule, devices and memory layouts, parameter values,
``inplace`` switches.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn as nn


@contextlib.contextmanager
def modes_kept(module: nn.Module) -> Iterator[None]:
    """Restore every submodule's own train/eval mode on leaving (``module.train(b)`` would overwrite them all)."""
    owners = list(module.modules())
    modes = [m.training for m in owners]
    try:
        yield
    finally:
        for m, training in zip(owners, modes):
            m.training = training


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode inside; each submodule's own mode restored after."""
    with modes_kept(module):
        module.eval()
        yield module


@contextlib.contextmanager
def kept_as_found(module: nn.Module) -> Iterator[None]:
    """Restore ``module`` as it was on leaving: every submodule's train/eval mode, and every parameter's
    and buffer's device and memory layout (strides). Its values are restored by the resets themselves."""
    owners = list(module.modules())
    layouts = [{(kind, name): (t.device, t.stride()) for kind, tensors in (("p", m._parameters), ("b", m._buffers))
                for name, t in tensors.items() if t is not None} for m in owners]
    with modes_kept(module):
        try:
            yield
        finally:
            for m, layout in zip(owners, layouts):
                _restore_layout(m, layout)


def _restore_layout(m: nn.Module, layout: dict[tuple[str, str], tuple[torch.device, tuple[int, ...]]]) -> None:
    for kind, tensors in (("p", m._parameters), ("b", m._buffers)):
        for name, t in tensors.items():
            if t is None or (kind, name) not in layout:
                continue
            dev, stride = layout[kind, name]
            if t.device == dev and t.stride() == stride:
                continue
            with torch.no_grad():
                restored = torch.empty_strided(t.shape, stride, dtype=t.dtype, device=dev).copy_(t)
            if isinstance(t, nn.Parameter):
                t.data = restored  # the same Parameter object: optimizers and hooks keep working
            else:
                setattr(m, name, restored)  # a buffer stays a buffer (Module.__setattr__)


@contextlib.contextmanager
def parameters_set(network: nn.Module, unit: str, values: dict[str, torch.Tensor]) -> Iterator[None]:
    """Temporarily put ``values`` into the parameters of module ``unit`` they name; restore after."""
    module = network.get_submodule(unit)
    params = {k: module.get_parameter(k) for k in values}
    saved = {k: p.detach().clone() for k, p in params.items()}
    try:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(values[k])
        yield
    finally:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(saved[k])


@contextlib.contextmanager
def out_of_place(model: nn.Module) -> Iterator[None]:
    """Temporarily switch modules such as ``ReLU(inplace=True)`` to out-of-place (same results)."""
    switched = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    try:
        for m in switched:
            setattr(m, "inplace", False)  # noqa: B010  (an attribute of some module classes only)
        yield
    finally:
        for m in switched:
            setattr(m, "inplace", True)  # noqa: B010


@contextlib.contextmanager
def hooks_removed(handles: list[torch.utils.hooks.RemovableHandle]) -> Iterator[None]:
    """Remove the hooks ``handles`` stand for on leaving."""
    try:
        yield
    finally:
        for h in handles:
            h.remove()
