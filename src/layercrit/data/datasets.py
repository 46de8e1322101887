"""Evaluation data: decoded once into memory as uint8, fed to models as [0, 1] floats.

Sources: an image folder in the ImageNet val layout (class folders; sorted order = class
index), CIFAR-10 as an image folder (e.g. ``../shared/data/cifar10/test``), or CIFAR-10 in
torchvision's download format (a folder holding ``cifar-10-batches-py``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from torchvision.datasets import CIFAR10
from tqdm.auto import tqdm

from ..errors import ConfigError, LayercritError
from ..paths import cache_dir, describe_os_error
from .folder import Notes, list_image_folder, open_image, show

log = logging.getLogger("layercrit")

CIFAR10_DIR = "cifar-10-batches-py"


@dataclass(frozen=True)
class DataOrigin:
    """Where an :class:`EvalData` came from: ``load_data(path, **options)`` loads it again (e.g. on
    another machine that sees the same files)."""

    path: str  # absolute
    options: tuple[tuple[str, Any], ...]  # load_data's keyword arguments that decide the images

    def load(self, *, progress: bool = False, cache: bool = True) -> EvalData:
        return load_data(self.path, **dict(self.options), progress=progress, cache=cache)


@dataclass
class EvalData:
    """A fixed evaluation set: the same images for every layer and trial.

    Made by :func:`layercrit.load_data` (from a folder), :meth:`from_tensors`, or by :func:`layercrit.measure`
    from a torch Dataset, a DataLoader or tensors (:func:`layercrit.data.adapters.as_eval_data`).

    Args:
        images: ``[N, 3, H, W]`` images, 8-bit (uint8) or float in [0, 1] (or, measured with
            ``data_space="input"``, floats in the network's input space).
        labels: ``[N]`` class indices (int64).
        classes: the class names; index = label.
        fingerprint: a hash of the images, labels and classes (:func:`fingerprint_tensors`): a results database
            refuses to resume a run on other data.
        source: what it came from, in words (recorded in a run).
        origin: how to load it again (:class:`DataOrigin`); None for data built in memory.

    Examples:
        >>> import torch
        >>> import layercrit as lc
        >>> images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
        >>> data = lc.EvalData.from_tensors(images, torch.tensor([0, 1, 2, 0, 1, 2]), ["ant", "bee", "cat"])
        >>> len(data), data.num_classes, len(data.subset(4, seed=0))
        (6, 3, 4)
    """

    images: torch.Tensor  # uint8 [N, 3, H, W] (or float in [0, 1])
    labels: torch.Tensor  # int64 [N]
    classes: list[str]
    fingerprint: str
    source: str = "tensors"
    origin: DataOrigin | None = None  # None: in-memory data (built from tensors, or a subset)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @classmethod
    def from_tensors(cls, images: torch.Tensor, labels: torch.Tensor, classes: list[str] | None = None,
                     source: str = "tensors") -> "EvalData":
        """Wrap in-memory images (uint8, or float in [0, 1]) and integer labels."""
        labels = labels.to(torch.int64)
        if classes is None:
            classes = [str(i) for i in range(int(labels.max()) + 1)]
        return cls(images, labels, list(classes), fingerprint_tensors(images, labels, classes), source)

    def subset(self, samples: int, seed: int, skip: int = 0) -> "EvalData":
        """The same draw :func:`load_data` makes: ``samples`` items chosen with ``seed`` (after the first ``skip``
        of that order: disjoint from ``subset(skip, seed)``)."""
        idx = torch.tensor(draw_indices(len(self), samples, seed, skip))
        return EvalData.from_tensors(self.images[idx], self.labels[idx], self.classes, self.source)

    def batches(self, batch_size: int, device: torch.device | str = "cpu",
                pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (images as float in [0, 1] on ``device``, labels on ``device``).

        With ``pin_memory`` (CUDA) the uint8 batch is copied from page-locked memory
        asynchronously and converted on the device.
        """
        images = self.images.pin_memory() if pin_memory else self.images
        for start in range(0, len(self), batch_size):
            x = images[start:start + batch_size].to(device, non_blocking=pin_memory)
            x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
            yield x, self.labels[start:start + batch_size].to(device)


def draw_indices(total: int, samples: int | None, seed: int, skip: int = 0) -> list[int]:
    """``samples`` of ``total`` indices (all if None) in a random order fixed by ``seed``.

    The order stays shuffled so that every prefix is itself a random subsample: adaptive
    sampling (``--target-ci``) evaluates prefixes. ``skip`` starts after that many of the order, so
    ``draw_indices(t, m, s, skip=n)`` is disjoint from ``draw_indices(t, n, s)`` (held-out images, e.g. to
    calibrate on), and the first draw does not depend on whether the second is made.
    """
    samples = total - skip if samples is None else samples
    if samples < 1:
        raise ConfigError(f"{{samples}} must be at least 1, got {samples}", ("samples",))
    if samples + skip > total:
        raise ConfigError(f"{{samples}} {samples} is more than the {total - skip} images available"
                          + (f" beside the {skip} measured" if skip else "")
                          + f": use {{samples}} {max(total - skip, 0)} or fewer", ("samples",))
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[skip:skip + samples]
    return order.tolist()


def fingerprint_tensors(images: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> str:
    h = hashlib.sha256()
    h.update(f"{images.dtype}|{tuple(images.shape)}|{'/'.join(classes)}|".encode("utf-8", "surrogateescape"))
    h.update(images.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(labels.contiguous().numpy().tobytes())
    return h.hexdigest()


def eval_sizes(input_size: int) -> tuple[int, int]:
    """(resize, crop): the study's Resize 256 / CenterCrop 224, scaled to the model's resolution.

    Small-image models (CIFAR-size, <= 64 px) get no crop margin: 32x32 CIFAR stays untouched.
    """
    if input_size <= 64:
        return input_size, input_size
    return round(input_size * 256 / 224), input_size


class _Decoded(Dataset):
    """Decodes (path, label) pairs by the rules of ``docs/data.md`` (:func:`open_image`); refusals are
    returned, not raised, so that they can be reported cleanly from worker processes."""

    def __init__(self, items, transform, resize: int | None = None):
        self.items, self.transform, self.resize = items, transform, resize

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        item, label = self.items[i]
        notes = Notes()
        try:
            img = item if not isinstance(item, str) else open_image(item, self.resize, notes)
            return self.transform(img), label, None, notes.kinds
        except LayercritError as e:  # an image refused with its reason (e.g. float values outside [0, 1])
            return None, label, str(e), notes.kinds
        except Exception as e:  # anything the rules did not foresee: still one line naming the file
            text = " ".join(str(e).split())[:200]
            return None, label, f"image {show(item)} cannot be decoded ({type(e).__name__}: {text}): remove or " \
                                "replace it", notes.kinds


def _collate(batch):
    """(stacked uint8 images, errors, notes): one tensor per batch crosses the worker boundary."""
    errors = [err for _, _, err, _ in batch if err is not None]
    notes = Notes()
    for *_, kinds in batch:
        notes.merge(kinds)
    return (None if errors else torch.stack([img for img, _, _, _ in batch])), errors, notes


def _open_rgb(path: str):
    """An image file as 8-bit RGB (:func:`layercrit.data.folder.open_image`)."""
    return open_image(path)


def _list_items(root: Path, split: str) -> tuple[list, list[str], str]:
    """Return ([(path or PIL image, label)], class names, description)."""
    try:
        is_cifar = (root / CIFAR10_DIR).is_dir() or root.name == CIFAR10_DIR
    except OSError as e:
        raise LayercritError(f"cannot read data folder {show(root)}: {describe_os_error(e)}: check its "
                             "permissions") from None
    if is_cifar:
        base = root.parent if root.name == CIFAR10_DIR else root
        try:
            ds = CIFAR10(str(base), train=split == "train", download=False)
        except Exception as e:
            raise LayercritError(f"CIFAR-10 files in {show(base)} are unreadable ({type(e).__name__}): download them "
                                 "again") from None
        return [(ds[i][0], ds.targets[i]) for i in range(len(ds))], list(ds.classes), f"cifar10:{show(base)}:{split}"
    listing = list_image_folder(root, split)
    return listing.items, listing.classes, f"folder:{show(root)}"


def load_data(path: str | Path, *, input_size: int = 224, samples: int | None = None, seed: int = 0,
              split: str = "test", resize: int | None = None, crop: int | None = None,
              num_workers: int | None = None, progress: bool = True, cache: bool = True, skip: int = 0) -> EvalData:
    """Draw ``samples`` images of a data folder with ``seed`` and decode them once.

    Decoded images are kept in the cache folder (``$LAYERCRIT_CACHE/data``) keyed by the files, the draw and
    the transform, so a later run on the same data skips decoding. Transform: Resize(resize) ->
    CenterCrop(crop) -> 8-bit tensor, the study's Resize 256 / CenterCrop 224 by default for 224 px models
    (:func:`eval_sizes`). What is a class, an image, skipped or refused: ``docs/data.md``.

    Args:
        path: an image folder (one folder per class, in the ImageNet val layout; sorted order = class index),
            CIFAR-10 as an image folder, or a folder holding torchvision's ``cifar-10-batches-py``.
        input_size: the model's resolution (default 224).
        samples: how many images (default None: all, in the seeded order).
        seed: the seed of the draw; the order stays shuffled, so every prefix is a random subsample.
        split: ``"test"`` or ``"train"``: the split of torchvision-format CIFAR-10.
        resize: the shorter side images are resized to (default from ``input_size``).
        crop: the center crop (default ``input_size``).
        num_workers: decoding processes (default: none below 256 images, else up to 4).
        progress: show a progress bar.
        cache: keep decoded images in the cache folder (``cache=False`` turns this off).
        skip: draw after the first ``skip`` images of the seeded order (images disjoint from
            ``load_data(path, samples=skip, seed=seed)``: held out, e.g. to fit a temperature on).

    Returns:
        An :class:`EvalData` of 8-bit images and labels, with its fingerprint and origin.

    Examples:
        >>> import pathlib, tempfile
        >>> from PIL import Image
        >>> import layercrit as lc
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for c in ("ant", "bee"):
        ...     (root / c).mkdir()
        ...     for i in range(3):
        ...         Image.new("RGB", (40, 36), (40 * i, 90, 0)).save(root / c / f"{i}.png")
        >>> data = lc.load_data(root, input_size=32, samples=4, seed=0, progress=False)
        >>> tuple(data.images.shape), data.classes
        ((4, 3, 32, 32), ['ant', 'bee'])

        The study's CIFAR-10 test images (``../shared/data``):

        >>> data = lc.load_data("../shared/data/cifar10/test", input_size=32, samples=500)  # doctest: +SKIP
    """
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"data folder not found: {show(root)}: check {{data}}", ("data",),
                          python={"data": "the path"})
    items, classes, description = _list_items(root, split)
    items = [items[i] for i in draw_indices(len(items), samples, seed, skip)]
    default_resize, default_crop = eval_sizes(input_size)
    resize, crop = resize or default_resize, crop or default_crop
    description = f"{description}|resize={resize}|crop={crop}"
    key = _cache_key(items, classes, resize, crop) if cache else None
    options = (("input_size", input_size), ("samples", samples), ("seed", seed), ("split", split),
               ("resize", resize), ("crop", crop)) + ((("skip", skip),) if skip else ())
    origin = DataOrigin(os.path.abspath(root), options)
    if key is not None and (cached := _read_cache(key)) is not None:
        data, notes = cached
        notes.report(root)  # the same warnings as when the images were decoded
        data.origin = origin
        return data
    transform = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(crop), transforms.PILToTensor()])
    if num_workers is None:
        num_workers = 0 if len(items) < 256 else min(4, os.cpu_count() or 1)
    loader = DataLoader(_Decoded(items, transform, resize), batch_size=64, num_workers=num_workers,
                        collate_fn=_collate)
    # Each worker batch is copied into one preallocated tensor at once and then freed: holding thousands of
    # shared-memory batches would exhaust file descriptors on large folders.
    images_t = torch.empty((len(items), 3, crop, crop), dtype=torch.uint8)
    labels_t = torch.tensor([label for _, label in items], dtype=torch.int64)
    offset, notes = 0, Notes()
    bar = tqdm(total=len(items), desc="decoding images", unit="img", disable=not progress, leave=False)
    with bar:
        for batch, errors, batch_notes in loader:
            if errors:  # each a whole line: "image PATH <reason>: <what to do>"
                raise LayercritError(errors[0] + (f" (and {len(errors) - 1} more refused images in this batch)"
                                                  if len(errors) > 1 else ""))
            notes.merge(batch_notes)
            images_t[offset:offset + len(batch)] = batch
            offset += len(batch)
            bar.update(len(batch))
    notes.report(root)
    data = EvalData(images_t, labels_t, classes, fingerprint_tensors(images_t, labels_t, classes), description,
                    origin)
    if key is not None:
        _write_cache(key, data, notes)
    return data


def _cache_key(items, classes, resize: int, crop: int) -> str | None:
    """Identifies decoded data by its files (path, size, mtime), order, classes and transform."""
    if not items or not isinstance(items[0][0], str):
        return None  # in-memory sources (torchvision CIFAR-10) decode fast anyway
    h = hashlib.sha256(f"v2|{resize}|{crop}|{'/'.join(classes)}".encode("utf-8", "surrogateescape"))
    for path, label in items:
        try:
            st = os.stat(path)
        except OSError:
            return None  # reported when decoding
        h.update(f"|{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{label}".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _read_cache(key: str) -> tuple[EvalData, Notes] | None:
    """The decoded data cached under ``key`` and the notes of its decoding (reported again), or None."""
    path = cache_dir("data", f"{key}.safetensors")
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            images, labels = f.get_tensor("images"), f.get_tensor("labels")
        classes = json.loads(meta["classes"])
        notes = Notes(json.loads(meta.get("notes", "{}")))
    except Exception:  # a damaged cache file is just decoded again
        return None
    return EvalData(images, labels, classes, meta["fingerprint"], meta["source"]), notes


def _write_cache(key: str, data: EvalData, notes: Notes) -> None:
    folder = cache_dir("data")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{key}.{os.getpid()}.partial"
        save_file({"images": data.images.contiguous(), "labels": data.labels.contiguous()}, str(tmp),
                  metadata={"classes": json.dumps(data.classes), "fingerprint": data.fingerprint,
                            "source": data.source, "notes": json.dumps(notes.kinds)})
        tmp.replace(folder / f"{key}.safetensors")
    except OSError as e:  # a read-only or full cache only costs speed
        log.warning(f"could not cache decoded images in {folder} ({e.strerror}); they are decoded again next time")


def download_cifar10(root: str | Path) -> Path:
    """Download CIFAR-10 in torchvision's format into ``root`` (needs internet)."""
    try:
        CIFAR10(str(root), train=False, download=True)
    except Exception as e:
        raise LayercritError(f"could not download CIFAR-10 into {root} ({type(e).__name__}): "
                             "connect to the internet, or copy cifar-10-batches-py there by hand") from None
    return Path(root)
