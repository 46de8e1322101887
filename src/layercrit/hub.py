"""Offline detection for pretrained-weight downloads: look once, fail fast.

Without a network, the Hugging Face hub client retries every request with growing pauses (22
retry lines over about 50 s) before it gives up. :func:`hf_offline_if_unreachable` checks once per
process whether the hub's host answers at all; if not, it switches the client to offline mode for
the call, so cached weights still load and missing ones fail at once with our one-line error.
"""
from __future__ import annotations

import contextlib
import os
import socket
from typing import Iterator
from urllib.parse import urlparse

PROBE_TIMEOUT = 3.0  # seconds for one TCP connection to the hub's host
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
_reachable: dict[tuple[str, int], bool] = {}


def reachable(host: str, port: int = 443, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds (asked once per process and host)."""
    key = (host, port)
    if key not in _reachable:
        try:
            with socket.create_connection(key, timeout=timeout):
                _reachable[key] = True
        except OSError:  # no DNS, no route, refused, timed out
            _reachable[key] = False
    return _reachable[key]


def hub_host() -> tuple[str, int]:
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)


def _already_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def hf_offline_if_unreachable() -> Iterator[bool]:
    """Within the block, the Hugging Face client works offline (cache only) if its host cannot be
    reached; yields whether it does. With a proxy configured the check is left to the client."""
    if _already_offline() or any(os.environ.get(v) for v in PROXY_VARS) or reachable(*hub_host()):
        yield _already_offline()
        return
    try:
        from huggingface_hub import constants
    except ImportError:  # no hub client: nothing retries
        yield True
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield True
    finally:
        constants.HF_HUB_OFFLINE = before
