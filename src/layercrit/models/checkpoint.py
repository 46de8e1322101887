"""Safe checkpoint loading: safetensors, or torch.load(weights_only=True).

Checkpoints are untrusted files. Arbitrary unpickling happens only with an explicit
opt-in (``trust_pickle=True`` / ``--trust-pickle``) and never silently.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file, save_file
import torch
import torch.nn as nn

from ..errors import ConfigError, LayercritError
from ..paths import describe_os_error

# Keys under which training scripts commonly nest the weights.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model")
# Buffers a checkpoint may lack without changing an eval-mode forward pass.
IGNORABLE_MISSING = ("num_batches_tracked",)


def _check_readable(path: Path) -> None:
    """A missing, unreadable or non-file checkpoint path: one line saying which."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise LayercritError(f"checkpoint not found: {path}: check the path") from None
    except OSError as e:
        raise LayercritError(f"cannot read checkpoint {path}: {describe_os_error(e)}: check the path and its "
                             "permissions") from None
    if not stat.S_ISREG(st.st_mode):
        raise LayercritError(f"checkpoint {path} is not a file: give a checkpoint file")
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError as e:
        raise LayercritError(f"cannot read checkpoint {path}: {describe_os_error(e)}: check its permissions") from None


def read_checkpoint(path: str | Path, *, trust_pickle: bool = False, safe_globals=()) -> Any:
    """Read a file as it is: a ``.safetensors`` file as a dict, else ``torch.load(weights_only=True)``.

    ``safe_globals`` allows exactly those extra classes, for this one load only. A file that needs
    anything else is refused, unless ``trust_pickle`` (an explicit opt-in for trusted files).
    """
    path = Path(path)
    _check_readable(path)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises several types for bad headers
            raise LayercritError(f"{path} is not a readable .safetensors file ({_first_line(e)}): re-export or "
                                 "download it again") from None
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(list(safe_globals)):
            warnings.simplefilter("ignore")  # pickle-protocol warnings; the refusal below says enough
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if not trust_pickle:
            if found is None and not _needs_objects(str(e)):
                raise LayercritError(f"{path} is not a readable PyTorch checkpoint ({_first_line(e)}): "
                                     "check the file") from None
            what = f"it holds {found.group(1)}" if found else "it holds non-tensor objects"
            raise ConfigError(
                f"{path} needs arbitrary unpickling ({what}), refused for safety: convert it to "
                ".safetensors, or pass {trust_pickle} if you trust its source", ("trust_pickle",),
                python={"trust_pickle": "trust_pickle=True"}) from None
    except MemoryError:
        raise LayercritError(f"{path} is too large to load into memory: check the file") from None
    except RecursionError:
        raise LayercritError(f"{path} is nested too deeply to be a checkpoint: check the file") from None
    except Exception as e:
        raise LayercritError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}): check the file") from None
    try:  # explicit --trust-pickle only
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=False)
    except (MemoryError, RecursionError, Exception) as e:
        raise ConfigError(f"{path} is not a readable PyTorch checkpoint, even with {{trust_pickle}} "
                          f"({type(e).__name__}: {_first_line(e)}): check the file") from None


def _needs_objects(message: str) -> bool:
    """Whether a weights_only refusal is about objects (rather than a file that is no pickle at all)."""
    return "weights_only" in message.lower() and "invalid load key" not in message.lower()


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0][:160] if text else type(e).__name__)


def load_state_dict(path: str | Path, *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file or a state-dict checkpoint into a flat name -> tensor dict."""
    return _flatten(read_checkpoint(path, trust_pickle=trust_pickle), Path(path))


MAX_NESTING = 8  # dicts inside dicts a checkpoint may nest its weights in ({"state_dict": {"model": ...}})


def _flatten(obj, path: Path) -> dict[str, torch.Tensor]:
    """The name -> tensor dict inside a loaded checkpoint, following ``_NESTED_KEYS`` at most
    ``MAX_NESTING`` levels deep and never the same object twice (a file may hold a cycle)."""
    seen: set[int] = set()
    for _ in range(MAX_NESTING + 1):
        if not isinstance(obj, dict):
            break
        if id(obj) in seen:
            raise LayercritError(f"{path} holds a dict that contains itself: it is no checkpoint; save model.state_dict()")
        seen.add(id(obj))
        nested = next((k for k in _NESTED_KEYS if isinstance(obj.get(k), dict)), None)
        if nested is None:
            break
        obj = obj[nested]
    else:
        raise LayercritError(f"{path} nests its weights more than {MAX_NESTING} levels deep: save model.state_dict()")
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        raise LayercritError(f"{path} holds a {type(obj).__name__}, not a state dict: save model.state_dict()")
    state = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not state:
        raise LayercritError(f"{path} holds no tensors: save model.state_dict()")
    for prefix in ("module.",):
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def key_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """What keeps ``state`` from fitting ``model`` exactly (missing, unexpected, misshapen keys), or None."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(IGNORABLE_MISSING)]
    unexpected = [k for k in state if k not in expected]
    misshapen = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
                 for k, v in expected.items() if k in state and state[k].shape != v.shape]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)):
        if keys:
            shown = ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
            parts.append(f"{label} {len(keys)}: {shown}")
    return "; ".join(parts) or None


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strictly load ``state`` into ``model``: any missing, unexpected or misshapen key is an error."""
    problem = key_mismatch(model, state)
    if problem:
        renamed = "missing" in problem and "unexpected" in problem  # names from another codebase, maybe
        raise ConfigError(f"checkpoint {source} does not fit the architecture ({problem}): check {{arch}} and "
                          "{num_classes}" + ("; a checkpoint whose names differ from the architecture's loads with "
                                             "{key_map} (auto, or rename rules)" if renamed else ""),
                          ("arch", "num_classes", "key_map") if renamed else ("arch", "num_classes"))
    bad = nonfinite_tensors(state)
    if bad:
        shown = ", ".join(bad[:3]) + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else "")
        raise LayercritError(f"checkpoint {source} holds non-finite values (NaN or Inf) in {shown}: the weights are "
                             "damaged or training diverged; use another checkpoint")
    model.load_state_dict(state, strict=False)  # strictness checked above, with ignorable buffers allowed


def nonfinite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of floating-point tensors in ``state`` holding NaN or Inf."""
    return [k for k, v in state.items()
            if (v.is_floating_point() or v.is_complex()) and v.numel() and not bool(torch.isfinite(v).all())]


def weights_checksum(model: nn.Module) -> str:
    """sha256 over every parameter and buffer (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_safetensors(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Save a model's state dict as .safetensors (shared tensors are cloned)."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=metadata)


ARCH_METADATA = "layercrit.arch"  # safetensors metadata keys that make a checkpoint self-describing
CLASSES_METADATA = "layercrit.num_classes"
NORMALIZATION_METADATA = "layercrit.normalization"  # JSON [mean, std], or "none" for raw [0, 1] input


def describe_weights(arch: str, num_classes: int, mean, std) -> dict[str, str]:
    """safetensors metadata with which ``file:`` loads the weights without --arch/--mean/--std."""
    norm = "none" if mean is None or std is None else json.dumps([[float(v) for v in mean], [float(v) for v in std]])
    return {"arch": arch, ARCH_METADATA: arch, CLASSES_METADATA: str(num_classes), NORMALIZATION_METADATA: norm}


@dataclass
class CheckpointInfo:
    """What a .safetensors file written by layercrit records about its network (None: not recorded)."""

    arch: str | None = None
    num_classes: int | None = None
    normalization: tuple | None = None  # (mean, std), or (None, None) for raw input; None: not recorded


def checkpoint_info(path: str | Path) -> CheckpointInfo:
    """Read the metadata of a .safetensors file (anything else, or unreadable: nothing recorded)."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return CheckpointInfo()
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:
        return CheckpointInfo()  # unreadable: the regular load reports it
    classes = meta.get(CLASSES_METADATA)
    recorded = meta.get(NORMALIZATION_METADATA)
    norm: tuple[tuple[float, ...], tuple[float, ...]] | tuple[None, None] | None = None
    if recorded == "none":
        norm = (None, None)
    elif recorded:
        try:
            mean, std = json.loads(recorded)
            norm = (tuple(float(v) for v in mean), tuple(float(v) for v in std))
        except (ValueError, TypeError):
            raise ConfigError(f"{path}: unreadable {NORMALIZATION_METADATA} metadata {recorded!r}: "
                              "pass {mean} and {std}", ("mean", "std")) from None
    arch = meta.get(ARCH_METADATA) or meta.get("arch")  # "arch": what the training lab has always written
    return CheckpointInfo(arch, int(classes) if classes and classes.isdigit() else None, norm)
