"""Does this hardware run reduced precision fast?  One-line answers for ``--precision bf16|fp16``.

bf16 is fast where the hardware has bf16 matrix units or instructions:

- CPU: Intel AMX (``amx_bf16``/``amx_tile``, Sapphire Rapids and later: ~4x fp32 on convolutions) or
  AVX512-BF16 (``avx512_bf16``, Cooper Lake, AMD Zen 4 and later: ~2x). Without either, oneDNN emulates
  bf16 and autocast only adds conversions: slower than fp32.
- CUDA: compute capability 8.0 or later (Ampere, Hopper, ...). Older GPUs have no bf16 tensor cores.

fp16 is fast on CUDA from compute capability 7.0 (Volta tensor cores) and on CPUs with AMX-FP16 or
AVX512-FP16. Unknown hardware (MPS, an unreadable CPU) counts as fast: no warning on a guess.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch

from ..errors import Message

log = logging.getLogger("layercrit")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags: torch's own probes, plus /proc/cpuinfo on Linux (empty if neither answers)."""
    flags: set[str] = set()
    probes = {"amx_tile": "_is_amx_tile_supported", "amx_fp16": "_is_amx_fp16_supported",
              "avx512_bf16": "_is_avx512_bf16_supported", "avx512f": "_is_avx512_supported",
              "avx2": "_is_avx2_supported"}
    for flag, probe in probes.items():
        fn = getattr(torch.cpu, probe, None)
        try:
            if fn is not None and fn():
                flags.add(flag)
        except Exception:  # a probe that cannot answer says nothing
            pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return frozenset(flags)


def _device(device: str | torch.device) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def precision_speed_note(precision: str, device: str | torch.device) -> str | None:
    """None where ``precision`` is fp32 or runs fast on ``device``; else one line saying why it will be slow (the
    option named ``{precision}``, as :class:`~layercrit.errors.Message` renders it)."""
    if precision == "fp32":
        return None
    device = _device(device)
    if device.type == "cpu":
        flags = cpu_flags()
        if not flags:
            return None  # cannot tell
        if precision == "bf16" and not flags & {"amx_bf16", "amx_tile", "avx512_bf16"}:
            return ("{precision} bf16 on a CPU without AMX or AVX512-BF16: bf16 is emulated here and will "
                    "likely be slower than fp32; use {precision} fp32")
        if precision == "fp16" and not flags & {"amx_fp16", "avx512_fp16"}:
            return ("{precision} fp16 on a CPU without AMX-FP16 or AVX512-FP16: fp16 is emulated here and will "
                    "likely be slower than fp32; use {precision} fp32 (or bf16 where supported)")
        return None
    if device.type == "cuda":
        try:
            major, minor = torch.cuda.get_device_capability(device)
            name = torch.cuda.get_device_name(device)
        except Exception:
            return None
        need = (8, 0) if precision == "bf16" else (7, 0)
        if (major, minor) < need:
            return (f"{{precision}} {precision} on {name} (compute capability {major}.{minor} < {need[0]}.{need[1]}): "
                    f"it has no {precision} tensor cores, so {precision} will be slow there; use {{precision}} "
                    + ("fp16 or fp32" if precision == "bf16" and (major, minor) >= (7, 0) else "fp32"))
        return None
    return None


def bf16_fast(device: str | torch.device = "cpu") -> bool:
    """True where bf16 compute is fast on ``device`` (or the hardware cannot be told)."""
    return precision_speed_note("bf16", device) is None


def cpu_bf16_kind() -> str:
    """'amx', 'avx512_bf16' or 'none': which bf16 path this CPU has (for benchmark notes)."""
    flags = cpu_flags()
    if flags & {"amx_bf16", "amx_tile"}:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    return "none"


@functools.lru_cache(maxsize=None)
def _warn_once(note: str) -> None:
    log.warning(Message(note))


def warn_if_slow(precision: str, device: str | torch.device) -> None:
    """Log one warning line (once per process and kind) where ``precision`` is slow on ``device``."""
    note = precision_speed_note(precision, device)
    if note is not None:
        _warn_once(note)
