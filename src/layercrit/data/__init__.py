"""Data: fixed evaluation subsets, decoded once; a torch Dataset, DataLoader or tensors as one (adapters.py)."""
from .adapters import as_eval_data
from .datasets import DataOrigin, EvalData, download_cifar10, eval_sizes, load_data

__all__ = ["DataOrigin", "EvalData", "as_eval_data", "download_cifar10", "eval_sizes", "load_data"]
