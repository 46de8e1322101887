"""Safe checkpoint loading: safetensors, or torch.load(weights_only=True).

Checkpoints are untrusted files. Arbitrary unpickling happens only with an explicit
opt-in (``trust_pickle=True`` / ``--trust-pickle``) and never silently.
"""
from __future__ import annotations

import hashlib
import pickle
import re
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import LayercritError

# Keys under which training scripts commonly nest the weights.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model")
# Buffers a checkpoint may lack without changing an eval-mode forward pass.
_IGNORABLE_MISSING = ("num_batches_tracked",)


def load_state_dict(path: str | Path, *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file or a state-dict checkpoint into a flat name -> tensor dict."""
    path = Path(path)
    if not path.is_file():
        raise LayercritError(f"checkpoint not found: {path}: check the path")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises several types for bad headers
            raise LayercritError(f"{path} is not a readable .safetensors file ({e}): re-export it") from None
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols; the refusal below says enough
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not trust_pickle:
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
            what = f"it holds {found.group(1)}" if found else "it holds non-tensor objects"
            raise LayercritError(
                f"{path} needs arbitrary unpickling ({what}), refused for safety: convert it to "
                ".safetensors, or pass --trust-pickle if you trust its source"
            ) from None
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise LayercritError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}): check the file") from None
    return _flatten(obj, path)


def _flatten(obj, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(obj, dict):
        nested = next((k for k in _NESTED_KEYS if isinstance(obj.get(k), dict)), None)
        if nested is None:
            break
        obj = obj[nested]
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        raise LayercritError(f"{path} holds a {type(obj).__name__}, not a state dict: save model.state_dict()")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise LayercritError(f"{path} holds no tensors: save model.state_dict()")
    for prefix in ("module.",):
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strictly load ``state`` into ``model``: any missing, unexpected or misshapen key is an error."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(_IGNORABLE_MISSING)]
    unexpected = [k for k in state if k not in expected]
    misshapen = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
                 for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or misshapen:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)):
            if keys:
                shown = ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
                parts.append(f"{label} {len(keys)}: {shown}")
        raise LayercritError(
            f"checkpoint {source} does not fit the architecture ({'; '.join(parts)}): "
            "check --arch and --num-classes"
        )
    model.load_state_dict(state, strict=False)


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
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=metadata)
