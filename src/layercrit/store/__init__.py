"""Store: the SQLite results database and its exports."""
from .export import PAPER_COLUMNS, export, to_paper_layout
from .sqlite import METRICS, RESULT_COLUMNS, ResultStore

__all__ = ["METRICS", "PAPER_COLUMNS", "RESULT_COLUMNS", "ResultStore", "export", "to_paper_layout"]
