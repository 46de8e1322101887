"""The Ray executor's options, checked once (errors name the Python field; the CLI shows its flag)."""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import torch

from ... import validate
from ...errors import ConfigError

DATA_MODES = ("object_store", "path")


def import_ray() -> ModuleType:
    """Ray, or one error saying how to install it. Ray is optional: only the Ray executor imports it."""
    try:
        import ray  # optional dependency (pip install 'layercrit[ray]')
    except ImportError:
        raise ConfigError("the Ray executor ({backend} ray) needs Ray: pip install 'layercrit[ray]' "
                          "(or pip install 'ray[default]>=2.9')") from None
    return ray


@dataclass(frozen=True)
class RayOptions:
    """Where and how tasks of (model, layer group, trial) run on a Ray cluster.

    ``address``: None starts a local Ray instance (all CPUs/GPUs of this machine), ``"auto"`` joins the
    cluster this machine belongs to, or ``"HOST:PORT"`` / ``"ray://HOST:10001"``. ``gpus_per_task``
    (default 1 when measuring on cuda, else 0; fractions share a GPU), ``cpus_per_task`` (default: 1 on
    GPUs; on the CPU, this process's torch thread count, capped at the largest node's CPUs),
    ``layers_per_task`` (default None: all of a model's units in one task per trial), ``max_retries``
    (retries of a task whose worker died), ``data_mode``: ``"object_store"`` (the driver decodes the
    images once and ships them once through Ray's object store) or ``"path"`` (every worker loads the
    data folder itself, through ``$LAYERCRIT_CACHE/data``; both must be on a shared filesystem).
    """

    address: str | None = None
    gpus_per_task: float | None = None
    cpus_per_task: float | None = None
    layers_per_task: int | None = None
    max_retries: int = 3
    data_mode: str = "object_store"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.address is not None:  # the checkers raise ConfigErrors of the field named "{field}"
            set_(self, "address", validate.text(self.address, "{address}"))
        for name in ("gpus_per_task", "cpus_per_task"):
            value = getattr(self, name)
            if value is None:
                continue
            value = validate.number(value, "{" + name + "}")
            if value < 0 or (name == "cpus_per_task" and value == 0):
                limit = "at least 0" if name == "gpus_per_task" else "above 0"
                raise ConfigError(f"{{{name}}} {value:g}: must be {limit}", (name,))
            set_(self, name, value)
        for name, low in (("layers_per_task", 1), ("max_retries", 0)):
            value = getattr(self, name)
            if value is not None or name == "max_retries":
                set_(self, name, validate.integer(value, "{" + name + "}", low=low, what="a whole number"))
        if self.data_mode not in DATA_MODES:
            raise ConfigError(f"{{data_mode}} {self.data_mode!r}: use {' or '.join(DATA_MODES)}", ("data_mode",))

    def gpus_for(self, device: str | torch.device) -> float:
        """GPUs per task when measuring on ``device`` (cpu or cuda: Ray assigns each task its GPU)."""
        name = str(device)
        kind = name.split(":")[0]
        if kind not in ("cpu", "cuda"):
            raise ConfigError(f"{{device}} {name} with the Ray executor: use cpu or cuda (Ray assigns the GPUs)",
                              ("device",))
        if name not in ("cpu", "cuda"):
            raise ConfigError(f"{{device}} {name} with the Ray executor: use cuda (Ray assigns each task its GPU)",
                              ("device",))
        gpus = self.gpus_per_task if self.gpus_per_task is not None else (1.0 if kind == "cuda" else 0.0)
        if kind == "cuda" and gpus == 0:
            raise ConfigError("{device} cuda with the Ray executor needs {gpus_per_task} above 0 "
                              "(Ray gives a task only the GPUs it asks for)", ("device", "gpus_per_task"))
        if kind == "cpu" and gpus > 0:
            raise ConfigError(f"{{gpus_per_task}} {gpus:g} with {{device}} cpu: pass {{device}} cuda to measure on "
                              "the GPUs", ("gpus_per_task", "device"))
        return gpus
