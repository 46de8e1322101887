"""Engine: the measurement loop and its metrics."""
from .measure import measure, package_versions, resolve_device
from .metrics import BaselineMetrics, ResetMetrics

__all__ = ["BaselineMetrics", "ResetMetrics", "measure", "package_versions", "resolve_device"]
