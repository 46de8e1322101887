"""Image folders: the one set of rules that decides what in a data folder is a class, an image, skipped
or refused, and how an image file becomes 8-bit RGB (the table in ``docs/data.md``).

Every command that reads an image folder (``measure``, ``study run``, ``train``, ``compress``,
``compress-compare``, the Ray workers) comes through :func:`list_image_folder` and
:func:`open_image` (via :func:`layercrit.load_data`).

- Walking: :func:`list_image_folder` decides per entry from its name and its ``stat`` alone, before any
  file is opened: hidden names (``.*``, AppleDouble ``._*``, ``.ipynb_checkpoints``) and the folders
  operating systems leave behind (``__MACOSX``, ...) are never classes or images; an image name that
  is not a regular file (a FIFO, a socket, a device node, a link to one) is skipped; an image name that
  is a link to nothing is refused. Skips are reported in one warning line per kind (count, examples).
- Decoding: :func:`open_image` opens only regular files, non-blocking, checks the pixel count against
  ``PIL.Image.MAX_IMAGE_PIXELS`` before decoding (a bound on the memory one image takes), turns every
  warning PIL raises into a decision (a note, aggregated by :class:`Notes`, or a refusal) and
  converts each pixel mode to 8-bit RGB by the table's rules.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from torchvision.datasets.folder import IMG_EXTENSIONS

from ..errors import LayercritError
from ..paths import describe_os_error

log = logging.getLogger("layercrit")

EXTENSIONS = tuple(IMG_EXTENSIONS)  # .jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp, any case
SPLIT_NAMES = {"train", "val", "test"}
# Folders that operating systems, archivers and NAS boxes leave beside real ones: never a class, never walked
SYSTEM_NAMES = frozenset({"__MACOSX", "@eaDir", "lost+found", "$RECYCLE.BIN", "System Volume Information"})
EXAMPLES = 3  # paths named in one warning line
CHUNK = 1 << 20  # pixels converted at a time from 16/32-bit and float images (bounds the temporary arrays)


def hidden(name: str) -> bool:
    """A name that is never a class or an image: hidden (``.*``, AppleDouble ``._*``) or a system folder."""
    return name.startswith(".") or name in SYSTEM_NAMES


def show(path: str | os.PathLike) -> str:
    """``path`` as one printable line: bytes that are not UTF-8 as ``\\xNN``, control characters (a
    newline in a file name) as ``\\n``, ``\\x1b``, ...; an ordinary path is unchanged."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _kind(mode: int) -> str:
    """The kind of a file that is not a regular file or a folder, in words."""
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


# ---------------------------------------------------------------------------------------------------------------
# walking a data folder

@dataclass
class FolderListing:
    """What an image folder holds: its classes (sorted; index = label) and (path, label) per image."""

    root: Path
    classes: list[str]
    items: list[tuple[str, int]]
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> paths (relative to root)
    special: dict[str, str] = field(default_factory=dict)  # skipped "special" path -> its kind ("a FIFO", ...)


class _Walk:
    """The state of one walk: what was skipped and refused, and which real folders and files were seen."""

    def __init__(self, root: Path, class_dirs: list[str]):
        self.root = root
        self.root_real = os.path.realpath(root)
        self.class_reals = {os.path.realpath(root / name) for name in class_dirs}
        self.seen_dirs: set[str] = set()
        self.seen_files: dict[str, tuple[int, str]] = {}
        self.skipped: dict[str, list[str]] = {}
        self.dangling: list[str] = []
        self.special: dict[str, str] = {}  # path (relative to root) -> what it is, for image names that are
        # not regular files

    def skip(self, reason: str, path: str) -> None:
        self.skipped.setdefault(reason, []).append(os.path.relpath(path, self.root))

    def walk_class(self, name: str, label: int) -> list[tuple[str, int]]:
        """(path, label) of every image below the class folder ``name``: folders in sorted order
        (depth-first, as torchvision sorts), images sorted by name within each folder."""
        top = self.root / name
        stack = [top]
        groups: list[tuple[str, list[tuple[str, int]]]] = []
        while stack:
            folder = stack.pop()
            real = os.path.realpath(folder)
            if (real in self.seen_dirs or real == self.root_real
                    or self.root_real.startswith(real.rstrip(os.sep) + os.sep)
                    or (folder != top and real in self.class_reals)):
                self.skip("link", str(folder))
                continue
            self.seen_dirs.add(real)
            entries = sorted_entries(folder)
            subdirs: list[Path] = []
            group: list[tuple[str, int]] = []
            groups.append((str(folder), group))
            for entry in entries:
                path = os.path.join(folder, entry.name)
                kind = self._entry_kind(entry, path)
                if kind == "dir":
                    if hidden(entry.name):
                        self.skip("hidden", path)
                    else:
                        subdirs.append(Path(path))
                    continue
                if not entry.name.lower().endswith(EXTENSIONS):
                    continue  # not an image name: never opened, not reported (README.txt, .DS_Store, ...)
                if hidden(entry.name):
                    self.skip("hidden", path)
                elif kind == "dangling":
                    self.dangling.append(path)
                elif kind != "file":
                    self.skip("special", path)
                    self.special[os.path.relpath(path, self.root)] = kind
                else:
                    self._add_file(path, label, group)
            stack.extend(reversed(subdirs))  # depth-first, in sorted order
        items: list[tuple[str, int]] = []
        for _, group in sorted(groups, key=lambda g: g[0]):
            items.extend(group)
        return items

    @staticmethod
    def _entry_kind(entry: os.DirEntry, path: str) -> str:
        """'dir', 'file' (a regular file), 'dangling' (a link to nothing, or a link loop) or the kind of a
        special file, all decided by ``stat`` (links followed): nothing is opened."""
        try:
            if entry.is_dir():
                return "dir"
            if entry.is_file():
                return "file"
            kind = _kind(os.stat(path).st_mode)
            return f"a link to {kind[2:] if kind.startswith('a ') else kind}" if entry.is_symlink() else kind
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                return "dangling"
            return "file"  # e.g. a link into a folder we may not search: refused with its reason when opened

    def _add_file(self, path: str, label: int, group: list[tuple[str, int]]) -> None:
        real_file = os.path.realpath(path)
        if real_file in self.seen_files:
            first_label, first_path = self.seen_files[real_file]
            if first_label != label:
                raise LayercritError(f"image {show(real_file)} is reached from two class folders ({show(first_path)} "
                                     f"and {show(path)}, through links): remove one of the links")
            self.skip("twice", path)
            return
        self.seen_files[real_file] = (label, path)
        group.append((path, label))


_SKIP_TEXT = {
    "hidden": "hidden or system {noun} (names starting with '.', AppleDouble '._*', __MACOSX, ...: never classes "
              "or images)",
    "link": "linked {noun} (a loop, a link to a class folder or a second link to a folder: every folder is walked "
            "once)",
    "twice": "{noun} reached twice through links (every image counts once)",
    "loose": "{noun} directly in the data folder, in no class folder",
    "special": "{noun} that {are} not regular files (FIFOs, sockets, devices: never opened)",
}


def _report_skips(root: Path, skipped: dict[str, list[str]], special: dict[str, str]) -> None:
    """One warning line per kind of skip: the count and a few examples."""
    for reason, paths in skipped.items():
        n = len(paths)
        noun = {"hidden": ("entry", "entries"), "link": ("entry", "entries"),
                "special": ("image name", "image names")}.get(reason, ("image", "images"))[n != 1]
        what = _SKIP_TEXT[reason].format(noun=noun, are="is" if n == 1 else "are")
        examples = ", ".join(show(p) + (f" ({special[p]})" if p in special else "") for p in paths[:EXAMPLES])
        log.warning(f"data folder {show(root)}: skipped {n} {what}: {examples}{', ...' if n > EXAMPLES else ''}")


def list_image_folder(root: Path, split: str = "test") -> FolderListing:
    """The classes and images of the image folder ``root`` by the rules of ``docs/data.md``.

    Classes are the sorted folders directly in ``root`` that are not hidden; images are the files
    with an image name (:data:`EXTENSIONS`) below them that are regular files. Skips are reported
    in one warning line per kind; refusals raise one :class:`LayercritError`.
    """
    entries = sorted_entries(root)
    classes: list[str] = []
    skipped: dict[str, list[str]] = {}
    for entry in entries:
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if is_dir:
            if hidden(entry.name):
                skipped.setdefault("hidden", []).append(entry.name)
            else:
                classes.append(entry.name)
        elif entry.name.lower().endswith(EXTENSIONS) and not hidden(entry.name):
            skipped.setdefault("loose", []).append(entry.name)
    if not classes:
        _report_skips(root, skipped, {})
        raise LayercritError(f"data folder {show(root)} holds no class folders: give a folder with one subfolder "
                             "per class")
    if set(classes) <= SPLIT_NAMES:
        pick = split if split in classes else classes[-1]
        raise LayercritError(f"data folder {show(root)} holds split folders ({', '.join(map(show, classes))}), not classes: "
                             f"pass {show(root / pick)}")
    walk = _Walk(root, classes)
    items: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        items.extend(walk.walk_class(name, label))
    for reason, paths in walk.skipped.items():
        skipped.setdefault(reason, []).extend(paths)
    _report_skips(root, skipped, walk.special)
    if walk.dangling:
        more = f" (and {len(walk.dangling) - 1} more)" if len(walk.dangling) > 1 else ""
        raise LayercritError(f"image {show(walk.dangling[0])} is a link to nothing (its target is missing){more}: "
                             "remove the link or restore its target")
    if not items:
        raise LayercritError(f"data folder {show(root)} holds no images ({', '.join(EXTENSIONS)}): check the path")
    return FolderListing(root, classes, items, skipped, walk.special)


# ---------------------------------------------------------------------------------------------------------------
# decoding one image

class ImageRefused(LayercritError):
    """An image file that is not decoded, with the reason and what to do (one line)."""


@dataclass
class Notes:
    """Conversions that changed what an image looks like, aggregated: kind -> [count, example, detail]."""

    kinds: dict[str, list] = field(default_factory=dict)

    def add(self, kind: str, path: str, detail: str = "", count: int = 1) -> None:
        """Count ``count`` images of ``kind``; the example is the first path in sorted order (the same
        whatever order the images were decoded in)."""
        entry = self.kinds.setdefault(kind, [0, path, detail])
        entry[0] += count
        if path < entry[1]:
            entry[1:] = [path, detail]

    def merge(self, other: "Notes | dict") -> None:
        kinds = other.kinds if isinstance(other, Notes) else other
        for kind, (count, path, detail) in kinds.items():
            self.add(kind, path, detail, count)

    def report(self, root: str | os.PathLike) -> None:
        """One warning line per kind (example paths relative to ``root``)."""
        for kind, (n, path, detail) in self.kinds.items():
            path = os.path.relpath(path, root)
            images = "image" if n == 1 else "images"
            if kind == "transparency":
                what = (f"{n} {images} with transparent pixels (e.g. {show(path)}) converted to RGB by dropping the "
                        "alpha channel, as torchvision's loader does (transparent pixels show the colour stored "
                        "under them)")
            elif kind == "cmyk":
                what = (f"{n} CMYK {images} (e.g. {show(path)}) converted to RGB without colour management "
                        "(colours may differ from what a viewer shows)")
            else:
                what = f"{n} {images} decoded despite a warning from PIL (e.g. {show(path)}: {detail})"
            log.warning(f"data folder {show(root)}: {what}")


def pixel_limit() -> int | None:
    """The most pixels one image may have: ``PIL.Image.MAX_IMAGE_PIXELS`` (89,478,485 by default, about
    9459 x 9459; None: no limit)."""
    return Image.MAX_IMAGE_PIXELS


def _refuse(path: str, reason: str, fix: str = "remove or replace it") -> ImageRefused:
    return ImageRefused(f"image {show(path)} {reason}: {fix}")


def _open_regular(path: str):
    """``path`` opened for reading if it is a regular file; never blocks (O_NONBLOCK: a FIFO or a device
    swapped in after the folder was listed is refused by ``fstat``, not waited on)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        st = os.stat(path)  # links followed; nothing is opened before we know it is a regular file
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, f"is {_kind(st.st_mode)}, not an image file", "remove it")
        fd = os.open(path, flags)
    except OSError as e:
        hint = {errno.ENOENT: "remove it or restore it (a link to nothing?)",
                errno.EACCES: "check its permissions", errno.EPERM: "check its permissions"}
        raise _refuse(path, f"cannot be read ({describe_os_error(e)})",
                      hint.get(e.errno or 0, "check the file and the disk")) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, f"is {_kind(st.st_mode)}, not an image file", "remove it")
        if st.st_size == 0:
            raise _refuse(path, "is empty (0 bytes)")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_image(path: str, resize: int | None = None, notes: Notes | None = None) -> Image.Image:
    """The image file ``path`` as 8-bit RGB, by the rules of ``docs/data.md``; a refusal raises
    :class:`ImageRefused` (one line naming the file, the reason and what to do).

    ``resize``: the shorter side the image will be resized to; an image whose resized size would be
    over the pixel limit (an extreme aspect ratio) is refused before it is decoded. Conversions that
    change what the image looks like are counted in ``notes``.
    """
    notes = Notes() if notes is None else notes
    limit = pixel_limit()
    with _open_regular(path) as f, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            im = Image.open(f)
        except Image.DecompressionBombError:  # over twice PIL's limit: PIL refuses before reading the size out
            raise _refuse(path, f"has more than twice {limit:,} pixels, the limit that bounds the memory one image "
                          "may take", "downscale it or remove it") from None
        except UnidentifiedImageError:
            raise _refuse(path, "is not an image PIL can read (damaged, or another format under an image name)") \
                from None
        except (OSError, ValueError, SyntaxError) as e:
            raise _refuse(path, f"is damaged ({type(e).__name__}: {_first_line(e)})") from None
        with im:
            w, h = im.size
            if w < 1 or h < 1:
                raise _refuse(path, f"is an empty image ({w} x {h} px)")
            if limit is not None and w * h > limit:
                raise _refuse(path, f"is {w} x {h} px ({w * h:,} pixels), over the limit of {limit:,} pixels that "
                              "bounds the memory one image may take", "downscale it or remove it")
            if limit is not None and resize:
                short, long = min(w, h), max(w, h)
                resized = resize * int(resize * long / short)
                if resized > limit:
                    raise _refuse(path, f"is {w} x {h} px: resized to {resize} px on its shorter side it would have "
                                  f"{resized:,} pixels, over the limit of {limit:,}",
                                  "crop it to a less extreme shape or remove it")
            try:
                im.load()
            except (OSError, ValueError, SyntaxError, EOFError) as e:  # truncated or corrupt data
                raise _refuse(path, f"is damaged ({type(e).__name__}: {_first_line(e)})") from None
            try:
                rgb = _to_rgb(im, path, notes)
            except ValueError as e:  # a pixel mode PIL cannot convert
                raise _refuse(path, f"has pixel mode {im.mode}, which cannot be converted to RGB "
                              f"({_first_line(e)})", "convert it to an 8-bit RGB image") from None
    about_image = [w_ for w_ in caught if not issubclass(w_.category, (
        Image.DecompressionBombWarning, DeprecationWarning, PendingDeprecationWarning, FutureWarning))]
    if about_image:  # (the pixel limit is decided above; deprecations are about code, not about this image)
        notes.add("pil", path, _first_line(about_image[0].message))
    return rgb


def _first_line(e: object) -> str:
    text = str(e).strip()
    return show(text.splitlines()[0][:200]) if text else ""



def _to_rgb(im: Image.Image, path: str, notes: Notes) -> Image.Image:
    """One decoded image as 8-bit RGB (the first frame of an animation or a multi-page file)."""
    mode = im.mode
    if mode in ("I", "F") or mode.startswith(("I;", "F;")):
        return _to_rgb8(im, path)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")  # palette or single-colour transparency becomes an alpha channel: no PIL warning
        low = rgba.getchannel("A").getextrema()[0]  # one band: (min, max)
        if isinstance(low, (int, float)) and low < 255:
            notes.add("transparency", path)
        return rgba.convert("RGB")
    if mode == "CMYK":
        notes.add("cmyk", path)
    return im.convert("RGB")


def _to_rgb8(im: Image.Image, path: str) -> Image.Image:
    """A single-channel image of 16/32-bit integers or floats as 8-bit RGB, values scaled, not clipped: 16-bit
    data (an ``I;16`` file, or 32-bit integers up to 65535) by 255/65535, floats in [0, 1] by 255; others refused.
    Converted a chunk of pixels at a time, so the temporary arrays stay small whatever the image size."""
    a = np.asarray(im)
    if a.size == 0:
        raise _refuse(path, "is an empty image")
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise _refuse(path, "is a float image holding NaN or Inf values", "convert it to an 8-bit image")
        low, high = float(a.min()), float(a.max())
        if low < 0 or high > 1:
            raise _refuse(path, f"is a float image with values in [{low:g}, {high:g}], not [0, 1]",
                          "convert it to an 8-bit image")
        scale: float | None = 255.0
    else:
        ilow, ihigh = int(a.min()), int(a.max())
        if ilow < 0 or ihigh > 65535:
            raise _refuse(path, f"has pixel mode {im.mode} with values in [{ilow}, {ihigh}], beyond 16 bits",
                          "convert it to an 8-bit image")
        bits16 = im.mode.startswith("I;16") or ihigh > 255  # a 16-bit file, or 32-bit mode holding 16-bit data
        scale = 255 / 65535 if bits16 else None
    flat, out = a.reshape(-1), np.empty(a.size, dtype=np.uint8)
    for s in range(0, a.size, CHUNK):
        part = flat[s:s + CHUNK]
        if a.dtype.kind == "f":
            eight = np.rint(part.astype(np.float64) * 255)
        else:
            part = part.astype(np.int64)
            eight = np.rint(part * scale) if scale is not None else part
        out[s:s + CHUNK] = np.clip(eight, 0, 255)
    return Image.fromarray(out.reshape(a.shape)).convert("RGB")  # uint8, 2-D: mode L


def sorted_entries(folder: Path) -> list[os.DirEntry]:
    """The entries of ``folder`` in name order; one error line where it cannot be read."""
    try:
        return sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        raise LayercritError(f"cannot read data folder {show(folder)}: {describe_os_error(e)}: check its "
                             "permissions") from None
