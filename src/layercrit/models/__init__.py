"""Models: architecture registry, spec resolution, normalization wrapper, safe checkpoints, block surgery."""
from . import cifar_resnet  # noqa: F401  (registers the cifar_resnet50 family)
from .blocks import RemovedBlock, register_block, remove_blocks
from .bundle import ModelBundle, ModelOptions, ModelSource
from .checkpoint import load_state_dict, save_safetensors, weights_checksum
from .factory import arch_factory, build_seeded, build_source, create_model, get_arch
from .registry import ArchSpec, list_archs, register_arch
from .wrapper import NormalizedModel

__all__ = ["ArchSpec", "ModelBundle", "ModelOptions", "ModelSource", "NormalizedModel", "RemovedBlock",
           "arch_factory", "build_seeded", "build_source", "create_model", "get_arch", "list_archs", "load_state_dict",
           "register_arch", "register_block", "remove_blocks", "save_safetensors",
           "weights_checksum"]
