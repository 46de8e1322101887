"""Architecture registry: a leaf table of names -> :class:`ArchSpec`, in the spirit of timm's registry.

An architecture entry knows how to build a freshly initialized model (the factory a random reset draws
from), its default class count, input resolution and the input normalization its weights expect. This
module holds the table only (register, look up, list; it imports neither timm nor torchvision): resolving
any other name (a timm or torchvision model, a callable in the user's own code, ``<arch>:remove=...``) is
:func:`layercrit.models.factory.get_arch`'s work.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .. import validate
from ..errors import ConfigError, LayercritError

if TYPE_CHECKING:
    import torch.nn as nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class ArchSpec:
    """What is needed to build and feed a fresh instance of one architecture."""

    name: str
    build: Callable[..., nn.Module]  # build(num_classes=...) -> freshly initialized model
    num_classes: int | None  # None: unknown (a user's callable without a default)
    input_size: int | None  # None: unknown
    mean: tuple[float, ...] | None = IMAGENET_MEAN  # mean/std None with normalization_known: raw [0, 1] input
    std: tuple[float, ...] | None = IMAGENET_STD
    source: str = "layercrit"
    extra: dict[str, Any] = field(default_factory=dict)
    normalization_known: bool = True  # False: the input normalization must be chosen when the model is created
    code: dict[str, str] | None = None  # a user's architecture: its file, callable and the file's sha256


_ARCHS: dict[str, ArchSpec] = {}
_PENDING: set[str] = set()  # register_arch(name, ...) called without a factory whose decorator was never applied


Build = Callable[..., "nn.Module"]
AUTO: Any = "auto"  # normalize= default: the mean/std given, else unknown (chosen when the model is created)
REMOVE_MARK = ":remove="  # "<arch>:remove=layer3.2,layer4.1": <arch> without those residual blocks


def register_arch(name: str, build: Build | None = None, *, num_classes: int, input_size: int,
                  mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                  normalize: Any = AUTO) -> Any:
    """Register an architecture under ``name``: then ``create_model("arch:<name>")``, ``arch=<name>`` and
    ``--arch <name>`` build it.

    A call, ``register_arch("net", build, num_classes=10, input_size=32, mean=..., std=...)``, or a
    decorator, ``@register_arch("net", num_classes=10, input_size=32, ...)`` above the function.

    Args:
        name: the architecture's name.
        build: ``build(num_classes=...) -> nn.Module`` (a function or an ``nn.Module`` class) building a freshly
            initialized network; omitted: ``register_arch`` returns a decorator.
        num_classes: its default class count.
        input_size: the resolution its models take (images are resized and cropped to it).
        mean: the input normalization its weights expect (or ``normalize=(mean, std)``).
        std: its standard deviation.
        normalize: ``(mean, std)``, or None for raw [0, 1] input; neither this nor ``mean``/``std``: each model
            of it must be given one when it is created (``create_model(..., normalize=...)``).

    Returns:
        ``build`` (unchanged), or, without it, a decorator that registers the function it decorates.

    Examples:
        >>> import torch.nn as nn
        >>> import layercrit as lc
        >>> @lc.register_arch("tiny_net", num_classes=4, input_size=16, normalize=None)
        ... def tiny_net(num_classes=4):
        ...     return nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                          nn.Linear(8, num_classes))
        >>> lc.create_model("arch:tiny_net").num_classes
        4
    """
    validate.text(name, "{name}")
    num_classes = validate.integer(num_classes, "{num_classes}", low=1, high=validate.MAX_NUM_CLASSES,
                                   what="a class count")
    input_size = validate.integer(input_size, "{input_size}", low=1, high=validate.MAX_INPUT_SIZE,
                                  what="a size in pixels")
    if normalize is not AUTO:
        if mean is not None or std is not None:
            raise ConfigError("give {mean}/{std} or {normalize}, not both")
        if normalize is not None:
            if not isinstance(normalize, (tuple, list)) or len(normalize) != 2:
                raise ConfigError(f"{{normalize}} {normalize!r}: give (mean, std) or None (raw [0, 1] input)")
            mean, std = normalize
    m, s = validate.normalization(mean, std)
    known = m is not None or normalize is None

    def decorator(fn: Build) -> Build:
        if not callable(fn):
            raise ConfigError(f"register_arch('{name}'): {{build}} {fn!r} is not a function or class that builds "
                              "the model")
        _ARCHS[name] = ArchSpec(name, fn, num_classes, input_size, m, s, normalization_known=known)
        _PENDING.discard(name)
        return fn

    if build is not None:
        decorator(build)
        return build
    if name not in _ARCHS:
        _PENDING.add(name)  # a decorator nobody applied registers nothing: get_arch says how to use it
    return decorator


def registered_arch(name: str) -> ArchSpec | None:
    """The architecture registered as ``name``, else None (a LayercritError for a decorator never applied)."""
    if name in _ARCHS:
        return _ARCHS[name]
    if name in _PENDING:
        raise LayercritError(
            f"architecture '{name}' was never registered: register_arch('{name}', ...) was called without the "
            f"function that builds it; pass it, register_arch('{name}', build, num_classes=..., input_size=...), "
            "or put @register_arch(...) above the function as a decorator")
    return None


def list_archs() -> list[str]:
    """The architectures registered by name: layercrit's own and those of :func:`register_arch`.

    Args:
        (none)

    Returns:
        Their names, sorted. timm's names (``resnet50``, ``tf_efficientnet_lite0``) and ``torchvision/<name>``
        are accepted as architectures as well without being listed.

    Examples:
        >>> import layercrit as lc
        >>> "cifar_resnet50" in lc.list_archs()
        True
    """
    return sorted(_ARCHS)


def variant_name(base: str, removed_blocks: list[str]) -> str:
    """Architecture name of ``base`` with ``removed_blocks`` replaced by their shortcuts."""
    base_name, _, already = base.partition(REMOVE_MARK)
    blocks = [b for b in already.split(",") if b] + list(removed_blocks)
    return f"{base_name}{REMOVE_MARK}{','.join(blocks)}" if blocks else base_name
