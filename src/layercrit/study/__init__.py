"""Studies: a TOML file lists models (trained by the lab or given as specs) and how to measure them."""
from .run import eval_source, metadata_path, run_study, training_table
from .spec import ModelEntry, Study, load_study

__all__ = ["ModelEntry", "Study", "eval_source", "load_study", "metadata_path", "run_study", "training_table"]
