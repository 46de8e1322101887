"""Data: fixed evaluation subsets, decoded once."""
from .datasets import DataOrigin, EvalData, download_cifar10, eval_sizes, load_data

__all__ = ["DataOrigin", "EvalData", "download_cifar10", "eval_sizes", "load_data"]
