"""Scale-out executors for :mod:`layercrit.engine` (the engine never imports this package).

``layercrit.scale.ray``: :class:`RayExecutor`, tasks of (model, layer group, trial) on a Ray cluster,
the driver the only writer of the results database (see docs/scale.md).
"""
from .ray import RayExecutor, RayOptions

__all__ = ["RayExecutor", "RayOptions"]
