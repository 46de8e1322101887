"""Scale-out backends. ``layercrit.scale.ray_backend``: tasks of (model, layer group, trial) on a Ray
cluster, the driver the only writer of the results database (see docs/scale.md).

Ray is optional (``pip install 'layercrit[ray]'``); nothing here imports it until it is used.
"""
from .ray_backend import check_ray_options, measure_models, run_plans, run_task

__all__ = ["check_ray_options", "measure_models", "run_plans", "run_task"]
