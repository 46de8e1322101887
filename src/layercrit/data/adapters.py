"""Data a researcher already holds, as an :class:`EvalData`: a ``torch.utils.data.Dataset``, a ``DataLoader``,
or a pair of tensors ``(x, y)``. The engine only ever sees an :class:`EvalData` or a data folder.

- A ``Dataset`` (items ``(image, label)``, the image a PIL image or a ``[C, H, W]`` tensor) is drawn from as a
  folder is: ``samples`` items chosen with ``seed`` (:func:`~layercrit.data.datasets.draw_indices`, the same
  indices and order as :func:`~layercrit.data.load_data` for a folder of as many images).
- A ``DataLoader`` (or an ``IterableDataset``) is consumed in its own order; ``samples`` caps how many images.
  One that shuffles (a ``RandomSampler``) is refused: it yields other images each time.
- Tensors ``(x, y)`` (``x`` of shape ``[N, 3, H, W]``) are measured whole unless ``samples`` is given, as an
  :class:`EvalData` is.
- ``shuffle`` (for adaptive sampling, which measures prefixes) puts data layercrit did not draw in the random
  order ``seed`` fixes, the order a draw of all of it makes.

PIL images get the transform folder images get for the model's resolution (Resize, CenterCrop, 8-bit,
:func:`~layercrit.data.datasets.eval_sizes`), after the folder rules' conversion to 8-bit RGB. Tensors are kept
as given (their size is the user's transform's); float tensors that are exactly 8-bit images (``ToTensor()`` of a
PIL image) are stored as 8-bit, so the same images have the same fingerprint whichever way they came.

What the values mean is explicit (``data_space``): ``"images"`` (the default) are [0, 1] images (or 8-bit), and
the model's normalization is applied to them, as to folder images; ``"input"`` are what the network itself takes
(already normalized), fed as they are. Float tensors given as images must lie in [0, 1] (within 0.1, a
resampling filter's overshoot): 0-255 values, normalized or mean-subtracted ones are refused
(:func:`check_data_space`), each with what to do.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any, cast

import torch
from PIL import Image
from torch.utils.data import (DataLoader, Dataset, IterableDataset, RandomSampler, Subset, SubsetRandomSampler,
                              WeightedRandomSampler)
from torchvision import transforms

from ..errors import ConfigError, LayercritError
from .datasets import EvalData, draw_indices, eval_sizes
from .folder import Notes, _to_rgb

IMAGES, INPUT = "images", "input"
DATA_SPACES = (IMAGES, INPUT)
# float images are [0, 1], up to a resampling filter's overshoot; beyond these they are something else: normalized
# (ImageNet's: about -2.1..2.6), mean-subtracted (about -0.5..0.5) or 0-255 pixel values
FAR_BELOW, FAR_ABOVE = -0.1, 1.1
INPUT_SIZE_PY = "input_size=N (the resolution the model was trained on)"


def is_folder(data: Any) -> bool:
    """A data folder (a path), which :func:`~layercrit.data.load_data` reads."""
    return isinstance(data, (str, os.PathLike))


def is_tensor_pair(data: Any) -> bool:
    """``(x, y)``: a tuple or list of two tensors."""
    return isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)


def is_data(data: Any) -> bool:
    """Anything :func:`as_eval_data` converts (a folder is not converted: :func:`~layercrit.data.load_data` reads it)."""
    return isinstance(data, (EvalData, Dataset, DataLoader)) or is_tensor_pair(data)


def data_space_arg(value: Any) -> str:
    """``data_space`` checked: ``"images"`` or ``"input"``."""
    if value not in DATA_SPACES:
        raise ConfigError(f"{{data_space}} {value!r}: give 'images' ([0, 1] images, or 8-bit: the model's "
                          "normalization is applied) or 'input' (tensors already in the network's input space, "
                          "fed as they are)", ("data_space",))
    return str(value)


def as_eval_data(data: Any, *, input_size: int | None = None, samples: int | None = None, seed: int = 0,
                 data_space: str = IMAGES, num_workers: int | None = None, draw: bool = True,
                 shuffle: bool = False) -> EvalData:
    """Convert data held in memory into an :class:`EvalData`.

    Args:
        data: an :class:`EvalData` (returned as it is, or drawn from with ``samples``), a pair of tensors
            ``(x, y)`` (``x``: ``[N, C, H, W]`` images, 8-bit or float; ``y``: ``[N]`` integer labels), a
            ``torch.utils.data.Dataset`` whose items are ``(image, label)`` (the image a PIL image or a
            ``[C, H, W]`` tensor), or a ``DataLoader`` yielding ``(x, y)`` batches (or lists of such items).
        input_size: the model's resolution: what PIL images are resized and cropped to (needed only for them).
        samples: how many images: drawn with ``seed`` from a Dataset (as from a folder; default all, in the
            seeded order), from tensors or an EvalData (default all, in their order); the first ``samples`` of
            a DataLoader (default all it yields).
        seed: the seed of the draw.
        data_space: ``"images"`` ([0, 1] floats or 8-bit) or ``"input"`` (float tensors in the network's input
            space; kept as float, never stored as 8-bit).
        num_workers: processes decoding a Dataset's items (default: none below 256 images, else up to 4).
        draw: False: all of a Dataset's items in its own order (``samples`` must be None), for a caller that
            draws from the result as from a folder (:meth:`EvalData.subset` makes the same draw).
        shuffle: put data that layercrit did not draw (tensors, an EvalData made from tensors, a DataLoader or
            an iterable dataset, none of them drawn with ``samples``) in a random order fixed by ``seed``: the
            order a draw of all of it makes. For adaptive sampling (``target_ci``), which measures prefixes and
            stops early: on data in a given order (sorted by class, say) a prefix is no sample of the whole.
            Drawn data (a Dataset, a folder's EvalData, a draw of ``samples``) is in such an order already.

    Returns:
        The images and labels as an :class:`EvalData`, with a fingerprint of the decoded tensors and labels.
        Class names are the Dataset's ``classes`` where it has them, else ``"0"``, ``"1"``, ... up to the
        largest label.

    Examples:
        >>> import torch
        >>> from layercrit.data.adapters import as_eval_data
        >>> x, y = torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
        >>> data = as_eval_data((x, y), samples=4, seed=0)
        >>> len(data), data.classes
        (4, ['0', '1', '2'])
    """
    space = data_space_arg(data_space)
    if samples is not None and samples < 1:  # for every kind (a DataLoader would yield no images), as draws say it
        raise ConfigError(f"{{samples}} must be at least 1, got {samples}", ("samples",))
    if isinstance(data, EvalData):
        if samples is not None and samples != len(data):
            return data.subset(samples, seed)
        return _seeded(data, seed) if shuffle and data.origin is None else data  # origin: a folder's draw
    if is_tensor_pair(data):
        x, y = data
        whole = _eval_data(_images(x, space), _labels(y), None, "tensors")
        if samples is not None and samples != len(whole):
            return whole.subset(samples, seed)
        return _seeded(whole, seed) if shuffle else whole
    if isinstance(data, DataLoader):
        _refuse_shuffling(data)
        consumed = _consume(data, input_size, samples, space, f"dataloader:{_name(data.dataset)}")
        return _seeded(consumed, seed) if shuffle else consumed
    if isinstance(data, IterableDataset) or (isinstance(data, Dataset) and not hasattr(data, "__len__")):
        consumed = _consume(cast(Iterable[Any], data), input_size, samples, space, f"dataset:{_name(data)}")
        return _seeded(consumed, seed) if shuffle else consumed
    if isinstance(data, Dataset):
        if not draw and samples is not None:
            raise ValueError("as_eval_data(draw=False) converts all of a Dataset: samples must be None")
        return _draw(data, input_size, samples, seed, space, num_workers, draw)
    raise ConfigError(f"{{data}} must be a data folder, an EvalData, a torch Dataset or DataLoader, or a pair of "
                      f"tensors (x, y), got {type(data).__name__}", ("data",), python={"data": "data"})


def check_data_space(data: EvalData, *, normalizes: bool, data_space: str) -> None:
    """Refuse a mismatch that can be seen: float images outside [0, 1] (beyond ``FAR_BELOW``/``FAR_ABOVE``) given
    as images (``data_space`` "images"): 0-255 values, or normalized / mean-subtracted ones; and 8-bit images
    given as the network's input (``"input"``), which they cannot be."""
    images = data.images
    if data_space == INPUT:
        if images.dtype == torch.uint8:
            raise ConfigError("{data_space} 'input' is for float tensors in the network's input space, but these are "
                              "8-bit images: leave {data_space} out (the model's normalization is applied to them)",
                              ("data_space",))
        return
    if not images.is_floating_point() or images.numel() == 0:
        return
    low, high = float(images.min()), float(images.max())
    if FAR_BELOW <= low and high <= FAR_ABOVE:
        return
    seen = f"the images hold values in [{low:.3g}, {high:.3g}], not [0, 1]"
    if low >= FAR_BELOW and 2.0 < high <= 255.5:
        raise ConfigError(f"{seen}: they look like 0-255 pixel values; divide them by 255 (or give uint8 images)",
                          ("data",))
    if normalizes:
        raise ConfigError(f"{seen}, and the model normalizes its input with its mean/std: they look normalized (or "
                          "mean-subtracted) already. Pass {data_space}='input' to feed them to the network as they "
                          "are (the model's normalization is then not applied), or give [0, 1] images (e.g. "
                          "ToTensor() without Normalize)", ("data_space",))
    raise ConfigError(f"{seen}: if they are what the network takes, pass {{data_space}}='input'; else give [0, 1] "
                      "images", ("data_space",))


def with_num_classes(data: EvalData, n: int) -> EvalData:
    """``data`` with ``n`` classes where its class names were only numbered from its labels (``"0"`` .. ``"k-1"``,
    ``k < n``): tensors and unnamed datasets hold the labels they hold, not the classes the model knows."""
    k = data.num_classes
    if n <= k or data.classes != [str(i) for i in range(k)]:
        return data
    return _eval_data(data.images, data.labels, [str(i) for i in range(n)], data.source)


# ---------------------------------------------------------------------------------------------------------------

def _seeded(data: EvalData, seed: int) -> EvalData:
    """All of ``data`` in the random order ``seed`` fixes (:func:`~layercrit.data.datasets.draw_indices`)."""
    return data.subset(len(data), seed)


RANDOM_SAMPLERS = (RandomSampler, SubsetRandomSampler, WeightedRandomSampler)


def _refuse_shuffling(loader: DataLoader) -> None:
    """A DataLoader that draws at random (``shuffle=True``: a RandomSampler on ``loader.sampler`` or on
    ``loader.batch_sampler.sampler``) yields other images each time it is iterated: not reproducible."""
    samplers = [loader.sampler, getattr(loader.batch_sampler, "sampler", None)]
    random = next((s for s in samplers if isinstance(s, RANDOM_SAMPLERS)), None)
    if random is not None:
        raise ConfigError(f"{{data}}: this DataLoader shuffles (shuffle=True, a {type(random).__name__}): its "
                          "shuffling draws other images, in another order, each time it is iterated, so the results "
                          "could not be reproduced, the run's seed would not decide the images and a resume into the "
                          "same results database would be refused as other data. Give a DataLoader with "
                          "shuffle=False, or pass its dataset (loader.dataset), which is drawn from with the seed",
                          ("data",))


def _name(obj: Any) -> str:
    inner = obj.dataset if isinstance(obj, Subset) else obj
    return type(inner).__name__


def _classes(obj: Any) -> list[str] | None:
    """A dataset's class names (torchvision's ``classes``), where it has them."""
    inner = obj.dataset if isinstance(obj, Subset) else obj
    classes = getattr(inner, "classes", None)
    if isinstance(classes, Sequence) and not isinstance(classes, str) and all(isinstance(c, str) for c in classes):
        return list(classes)
    return None


def _eval_data(images: torch.Tensor, labels: torch.Tensor, classes: list[str] | None, source: str) -> EvalData:
    if len(images) != len(labels):
        raise ConfigError(f"{{data}} holds {len(images)} images but {len(labels)} labels", ("data",))
    if len(labels) == 0:
        raise ConfigError("{data} holds no images", ("data",))
    if int(labels.min()) < 0:
        raise ConfigError(f"{{data}}: labels must be class indices (0, 1, ...), got {int(labels.min())}", ("data",))
    top = int(labels.max())
    if classes is not None and top >= len(classes):
        raise ConfigError(f"{{data}}: label {top} is beyond its {len(classes)} classes", ("data",))
    return EvalData.from_tensors(images, labels, classes, source)


def _labels(y: Any) -> torch.Tensor:
    labels = torch.as_tensor(y)
    if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ConfigError(f"{{data}}: labels must be integer class indices, one per image (shape [N]), got "
                          f"{labels.dtype} of shape {tuple(labels.shape)}", ("data",))
    return labels.to(torch.int64)


def _images(x: torch.Tensor, space: str) -> torch.Tensor:
    """``[N, C, H, W]`` images as stored: 8-bit where float images are exactly 8-bit ones (``space`` "images")."""
    if x.dim() != 4:
        raise ConfigError(f"{{data}}: images must have shape [N, C, H, W], got {tuple(x.shape)}", ("data",))
    channels = x.shape[1]
    if channels != 3:  # never broadcast against the model's 3-channel mean/std, nor fed to its 3-channel input
        raise ConfigError(f"{{data}}: images must have 3 channels (RGB), got {channels} "
                          f"channel{'' if channels == 1 else 's'} (shape {tuple(x.shape)}): convert grayscale or "
                          "RGBA images to RGB (a grayscale tensor x: x.expand(-1, 3, -1, -1); RGBA: drop or composite "
                          "the alpha channel), or give PIL images, which are converted to RGB", ("data",))
    x = x.detach().cpu()
    if x.dtype == torch.uint8 or not x.is_floating_point():
        if x.dtype != torch.uint8:
            raise ConfigError(f"{{data}}: images must be 8-bit or float tensors, got {x.dtype}", ("data",))
        return x.contiguous()
    if not bool(torch.isfinite(x).all()):
        raise ConfigError("{data}: the images hold NaN or Inf values", ("data",))
    if space == IMAGES and float(x.min()) >= 0 and float(x.max()) <= 1:
        eight = x.float().mul(255).round_().to(torch.uint8)
        if torch.equal(eight.float().div_(255), x.float()):
            return eight  # ToTensor() of 8-bit images: stored (and fingerprinted) as the 8-bit images they are
    return x.float().contiguous()


def _transform(input_size: int | None):
    if input_size is None:
        raise ConfigError("the data holds PIL images, and the model's input resolution is unknown, so they cannot be "
                          "resized for it: give {input_size}: the image size it was trained on (e.g. 32 for CIFAR-10, "
                          "224 for ImageNet)", ("input_size",), python={"input_size": INPUT_SIZE_PY})
    resize, crop = eval_sizes(input_size)
    return transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(crop), transforms.PILToTensor()])


class _Converted:
    """One ``(image, label)`` item as ``(image tensor, label)``: a PIL image converted to 8-bit RGB by the folder
    rules and transformed as folder images are; a tensor as it is. Picklable (DataLoader workers)."""

    def __init__(self, input_size: int | None):
        self.input_size = input_size
        self.transform: Any = None

    def __call__(self, item: Any) -> tuple[torch.Tensor, Any]:
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise ConfigError(f"{{data}}: items must be (image, label) pairs, got {type(item).__name__}", ("data",))
        image, label = item[0], item[1]
        if isinstance(image, Image.Image):
            if self.transform is None:
                self.transform = _transform(self.input_size)
            image = self.transform(_to_rgb(image, "an image of the dataset", Notes()))
        elif not isinstance(image, torch.Tensor) or image.dim() != 3:
            what = f"a tensor of shape {tuple(image.shape)}" if isinstance(image, torch.Tensor) else \
                type(image).__name__
            raise ConfigError(f"{{data}}: each image must be a PIL image or a [C, H, W] tensor, got {what}", ("data",))
        return image, label


class _Refused:
    """A refusal met converting a batch, returned as a value: raised in a DataLoader worker process, it would
    reach the caller wrapped in the worker's traceback (another message, other ``fields``); returned, the main
    process raises the error itself, the same as without workers (as :class:`~layercrit.data.datasets._Decoded`
    returns its refusals)."""

    def __init__(self, error: LayercritError):
        self.error = error


class _ConvertAll:
    """A DataLoader's ``collate_fn``: the converted items of one batch, as a list (or the batch's first
    refusal, :class:`_Refused`)."""

    def __init__(self, input_size: int | None):
        self.convert = _Converted(input_size)

    def __call__(self, items: list[Any]) -> list[tuple[torch.Tensor, Any]] | _Refused:
        try:
            return [self.convert(i) for i in items]
        except LayercritError as e:  # a ConfigError (fields and all) or an image refused by the folder rules
            return _Refused(e)


def _converted(batch: list[tuple[torch.Tensor, Any]] | _Refused) -> list[tuple[torch.Tensor, Any]]:
    if isinstance(batch, _Refused):
        raise batch.error
    return batch


def _is_image(obj: Any) -> bool:
    return isinstance(obj, Image.Image) or (isinstance(obj, torch.Tensor) and obj.dim() == 3)


def _batch_items(part: Any, convert: _Converted) -> list[tuple[torch.Tensor, Any]]:
    """One DataLoader batch as (image, label) items: ``(x, y)`` tensors (the default collate), ``(images, labels)``
    lists, or a list of ``(image, label)`` pairs (a collate_fn that keeps the items)."""
    if not isinstance(part, (tuple, list)) or not part:
        raise ConfigError(f"{{data}}: the DataLoader must yield (images, labels) batches, got {type(part).__name__}",
                          ("data",))
    first = part[0]
    if isinstance(first, (tuple, list)) and len(first) >= 2 and _is_image(first[0]) and not _is_image(first[1]):
        return [convert(p) for p in part]
    if len(part) == 2 and isinstance(first, torch.Tensor) and first.dim() == 4:
        return list(zip(first, _labels(part[1]).tolist()))
    if len(part) == 2 and isinstance(first, (tuple, list)):
        return [convert(p) for p in zip(part[0], part[1])]
    raise ConfigError("{data}: the DataLoader must yield (images, labels) batches: images as an [N, C, H, W] tensor "
                      "or a list of PIL images", ("data",))


def _label(value: Any) -> int | None:
    """One item's label as an int where it is an integer scalar by the rule tensors ``(x, y)`` follow (a Python
    or numpy integer, a 0-d integer tensor or array; no bool, float, string or one-hot vector), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        return None
    if t.dim() != 0 or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        return None
    return int(t)


def _item_labels(labels: list[Any], indices: Sequence[int] | None = None) -> torch.Tensor:
    """The items' labels as ``[N]`` int64, each checked (:func:`_label`); ``indices``: the items' indices in the
    dataset (default: their positions), what a refusal names."""
    out = []
    for k, value in enumerate(labels):
        label = _label(value)
        if label is None:
            shown = " ".join(repr(value).split())
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            item = indices[k] if indices is not None else k
            raise ConfigError(f"{{data}}: labels must be integer class indices (an int, a numpy integer or a 0-d "
                              f"integer tensor; not a float, bool, string or one-hot vector), but item {item}'s "
                              f"label is {shown} ({type(value).__name__})", ("data",))
        out.append(label)
    return _labels(torch.tensor(out, dtype=torch.int64))


def _stack(images: list[torch.Tensor], labels: list[Any], space: str,
           indices: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    shapes = {tuple(t.shape) for t in images}
    if len(shapes) > 1:
        raise ConfigError(f"{{data}}: the images have different shapes ({', '.join(map(str, sorted(shapes)[:3]))}): "
                          "give images of one size (resize them in the dataset's transform, or return PIL images, "
                          "which are resized for the model)", ("data",))
    dtypes = {t.dtype for t in images}
    if len(dtypes) > 1:
        images = [t.float().div(255) if t.dtype == torch.uint8 else t.float() for t in images]
    return _images(torch.stack(images), space), _item_labels(labels, indices)


def _draw(ds: Dataset, input_size: int | None, samples: int | None, seed: int, space: str,
          num_workers: int | None, draw: bool = True) -> EvalData:
    """``samples`` items of a map-style dataset drawn with ``seed``, as a folder's images are drawn (``draw``
    False: every item in its order)."""
    total = len(ds)  # type: ignore[arg-type]
    idx = draw_indices(total, samples, seed) if draw else list(range(total))
    if num_workers is None:
        num_workers = 0 if len(idx) < 256 else min(4, os.cpu_count() or 1)
    loader = DataLoader(Subset(ds, idx), batch_size=64, num_workers=num_workers, collate_fn=_ConvertAll(input_size))
    pairs = [p for batch in loader for p in _converted(batch)]
    images, labels = _stack([p[0] for p in pairs], [p[1] for p in pairs], space, idx)
    return _eval_data(images, labels, _classes(ds), f"dataset:{_name(ds)}")


def _consume(source: Iterable[Any], input_size: int | None, samples: int | None, space: str,
             description: str) -> EvalData:
    """The first ``samples`` images of a DataLoader (batches) or an iterable dataset (items), in their order."""
    convert = _Converted(input_size)
    images: list[torch.Tensor] = []
    labels: list[Any] = []
    batched = isinstance(source, DataLoader) and source.batch_sampler is not None
    for part in source:
        items = _batch_items(part, convert) if batched else [convert(part)]
        for image, label in items:
            if samples is not None and len(images) >= samples:
                break
            images.append(image)
            labels.append(label)
        if samples is not None and len(images) >= samples:
            break
    if not images:
        raise ConfigError("{data} yielded no images", ("data",))
    inner = source.dataset if isinstance(source, DataLoader) else source
    x, y = _stack(images, labels, space)
    return _eval_data(x, y, _classes(inner), description)
