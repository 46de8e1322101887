"""layercrit: which layers of a trained vision model does its decision depend on?

Pipeline: models (create_model) -> data (load_data) -> resets -> engine (measure)
-> store (ResultStore, export). The CLI (``layercrit``) is a thin layer over this API.
"""
__version__ = "0.1.0"

from .data import EvalData, load_data  # noqa: E402
from .engine import measure  # noqa: E402
from .errors import LayercritError  # noqa: E402
from .models import ModelBundle, create_model, list_archs, register_arch  # noqa: E402
from .resets import discover_layers  # noqa: E402
from .store import ResultStore, export  # noqa: E402

__all__ = ["EvalData", "LayercritError", "ModelBundle", "ResultStore", "create_model", "discover_layers", "export",
           "list_archs", "load_data", "measure", "register_arch", "__version__"]
