"""The Ray executor: one measurement (or a whole study) spread over many GPUs and machines.

``RayExecutor(RayOptions(...))`` is an executor of :mod:`layercrit.engine` (pass it as
``measure(..., executor=...)``); ``options`` checks its settings, ``driver`` splits plans into
tasks and records what returns, ``worker`` runs a task, ``payload`` is what travels between them.
Ray itself is optional (``pip install 'layercrit[ray]'``): nothing here imports it until it is used.
See docs/scale.md.
"""
from .driver import RayExecutor, make_tasks
from .options import DATA_MODES, RayOptions
from .worker import run_task

__all__ = ["DATA_MODES", "RayExecutor", "RayOptions", "make_tasks", "run_task"]
