"""``torch_threads(n)``: torch's CPU thread count for a block, restored afterwards.

Several processes sharing a machine should each compute on their own cores: two processes with torch's
default (one thread per core) on two cores oversubscribe them, and OpenMP's waiting threads then make
both several times slower than one thread each.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from .errors import LayercritError


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Compute with ``threads`` CPU threads inside the block (None: leave torch's setting alone)."""
    if threads is None:
        yield
        return
    if threads < 1:
        raise LayercritError(f"threads must be at least 1, got {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
