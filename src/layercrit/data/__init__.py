"""Data: fixed evaluation subsets, decoded once."""
from .datasets import EvalData, download_cifar10, eval_sizes, load_data

__all__ = ["EvalData", "download_cifar10", "eval_sizes", "load_data"]
