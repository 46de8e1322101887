"""Models: architecture registry, spec resolution, normalization wrapper, safe checkpoints."""
from . import cifar_resnet  # noqa: F401  (registers the cifar_resnet50 family)
from .checkpoint import load_state_dict, save_safetensors, weights_checksum
from .factory import ModelBundle, build_seeded, create_model
from .registry import ArchSpec, get_arch, list_archs, register_arch
from .wrapper import NormalizedModel

__all__ = ["ArchSpec", "ModelBundle", "NormalizedModel", "build_seeded", "create_model", "get_arch",
           "list_archs", "load_state_dict", "register_arch", "save_safetensors", "weights_checksum"]
