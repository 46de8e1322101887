"""The data loader's rules (issue 24, docs/data.md), row by row, in-process: what counts as a class and
an image, what is skipped (with one warning line per kind), what is refused (one line naming the file)
and what each pixel mode becomes. The same rules through the real CLI, for every command that reads
images (measure, study run, train, compress), are in tests/test_hostile.py."""
from __future__ import annotations

import logging
import os
import socket
import stat
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from layercrit import load_data
from layercrit.data.folder import ImageRefused, Notes, list_image_folder, open_image, show
from layercrit.errors import LayercritError

LIMIT = Image.MAX_IMAGE_PIXELS  # 89,478,485: the documented pixel limit


# ---------------------------------------------------------------------------------------------------------------
# helpers

def folder(root: Path, classes=("a", "b", "c"), per_class: int = 2) -> Path:
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (10 + c * 40, 20 + i * 50, 30)).save(root / name / f"{i}.png")
    return root


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(path: Path, w: int, h: int) -> None:
    """A PNG that declares ``w`` x ``h`` pixels and holds none: a decoder that trusted it would allocate them."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b""))


def png16_rgb(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit RGB PNG (PIL cannot write one): ``pixels`` uint16 [H, W, 3]."""
    h, w, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))


def rgb(path: Path, resize: int | None = None, notes: Notes | None = None) -> np.ndarray:
    return np.asarray(open_image(str(path), resize, notes))


def refused(path: Path, *needles: str, resize: int | None = None) -> str:
    with pytest.raises(ImageRefused) as e:
        open_image(str(path), resize)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"image {show(path)} "), msg
    for n in needles:
        assert n in msg, msg
    return msg


def warned(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "layercrit" and r.levelno == logging.WARNING]


@pytest.fixture
def caplog_warn(caplog):
    caplog.set_level(logging.WARNING, logger="layercrit")
    return caplog


# ---------------------------------------------------------------------------------------------------------------
# walking: classes, images, skipped, refused

def test_hidden_folders_are_never_classes_and_labels_stay(tmp_path, caplog_warn):
    root = folder(tmp_path / "d")
    (root / ".ipynb_checkpoints").mkdir()  # Jupyter's, holding images: it would become class 0
    Image.new("RGB", (8, 8)).save(root / ".ipynb_checkpoints" / "x-checkpoint.png")
    (root / "__MACOSX" / "a").mkdir(parents=True)  # an unzipped macOS archive's resource forks
    (root / "__MACOSX" / "a" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "a" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS on a FAT/SMB/exFAT disk
    (root / "b" / ".thumbs").mkdir()
    Image.new("RGB", (8, 8)).save(root / "b" / ".thumbs" / "t.png")
    (root / "c" / ".DS_Store").write_bytes(b"junk")  # not an image name: ignored without a word
    listing = list_image_folder(root)
    assert listing.classes == ["a", "b", "c"]
    assert [(os.path.relpath(p, root), label) for p, label in listing.items] == [
        ("a/0.png", 0), ("a/1.png", 0), ("b/0.png", 1), ("b/1.png", 1), ("c/0.png", 2), ("c/1.png", 2)]
    assert sorted(listing.skipped["hidden"]) == [".ipynb_checkpoints", "__MACOSX", "a/._0.png", "b/.thumbs"]
    lines = warned(caplog_warn)
    assert len(lines) == 1, lines
    assert "skipped 4 hidden or system entries" in lines[0] and ".ipynb_checkpoints" in lines[0]
    assert ".DS_Store" not in lines[0]
    data = load_data(root, input_size=8, progress=False)
    assert data.classes == ["a", "b", "c"] and sorted(data.labels.tolist()) == [0, 0, 1, 1, 2, 2]


def test_a_class_left_empty_by_skipping_keeps_its_index(tmp_path, caplog_warn):
    root = folder(tmp_path / "d")
    (root / "b" / "0.png").unlink()
    (root / "b" / "1.png").rename(root / "b" / "._1.png")
    listing = list_image_folder(root)
    assert listing.classes == ["a", "b", "c"]  # an empty class folder stays a class (label 1), as before
    assert [label for _, label in listing.items] == [0, 0, 2, 2]


def test_only_hidden_folders_is_no_class_folders(tmp_path, caplog_warn):
    root = tmp_path / "d"
    (root / ".ipynb_checkpoints").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / ".ipynb_checkpoints" / "x.png")
    with pytest.raises(LayercritError, match="holds no class folders"):
        list_image_folder(root)
    assert "hidden" in warned(caplog_warn)[0]


def test_images_in_the_root_are_in_no_class(tmp_path, caplog_warn):
    root = folder(tmp_path / "d")
    Image.new("RGB", (8, 8)).save(root / "stray.png")
    (root / "notes.txt").write_text("x")
    listing = list_image_folder(root)
    assert len(listing.items) == 6 and listing.skipped == {"loose": ["stray.png"]}
    assert warned(caplog_warn) == [f"data folder {root}: skipped 1 image directly in the data folder, in no class "
                                   "folder: stray.png"]


def special_files(root: Path) -> list[str]:
    """A FIFO, a socket, a device node (root only) and a link to /dev/zero, each with an image name."""
    made = []
    os.mkfifo(root / "a" / "pipe.png")
    made.append("a/pipe.png")
    with socket.socket(socket.AF_UNIX) as s:  # bound where the path is short, then moved into place
        short = Path("/tmp", f"lc-sock-{os.getpid()}-{time.monotonic_ns()}.png")
        s.bind(str(short))
    os.rename(short, root / "b" / "sock.png")
    made.append("b/sock.png")
    os.symlink("/dev/zero", root / "c" / "zero.png")
    made.append("c/zero.png")
    try:
        os.mknod(root / "c" / "dev.jpg", stat.S_IFCHR | 0o600, os.makedev(1, 5))
        made.append("c/dev.jpg")
    except (PermissionError, OSError):
        pass  # mknod needs CAP_MKNOD: the link to /dev/zero stands in for a device node
    return made


def test_special_files_are_skipped_unopened(tmp_path, caplog_warn):
    root = folder(tmp_path / "d")
    made = special_files(root)
    start = time.monotonic()
    data = load_data(root, input_size=8, progress=False)
    assert time.monotonic() - start < 30
    assert len(data) == 6
    lines = warned(caplog_warn)
    assert len(lines) == 1, lines
    assert f"skipped {len(made)} image names that are not regular files" in lines[0]
    assert "a/pipe.png (a FIFO), b/sock.png (a socket)" in lines[0], lines[0]
    special = list_image_folder(root).special
    assert special["a/pipe.png"] == "a FIFO" and special["b/sock.png"] == "a socket"
    assert special["c/zero.png"] == "a link to character device"
    assert special.get("c/dev.jpg", "a character device") == "a character device"
    # opened directly (a file swapped in after the listing): refused at once, never waited on
    refused(root / "a" / "pipe.png", "is a FIFO, not an image file")
    refused(root / "c" / "zero.png", "is a character device")


def test_links_to_nothing_are_refused(tmp_path, caplog_warn):
    root = folder(tmp_path / "d")
    os.symlink(tmp_path / "gone.png", root / "a" / "gone.png")
    os.symlink("loop.png", root / "b" / "loop.png")  # a link to itself
    with pytest.raises(LayercritError) as e:
        list_image_folder(root)
    assert str(e.value) == (f"image {root / 'a' / 'gone.png'} is a link to nothing (its target is missing) "
                            "(and 1 more): remove the link or restore its target")


def test_names_with_newlines_and_bytes_that_are_not_utf8(tmp_path, caplog_warn):
    root = folder(tmp_path / "d")
    weird_class = os.fsdecode(b"caf\xe9")
    (root / weird_class).mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(root / weird_class / "x.png")
    Image.new("RGB", (8, 8), (4, 5, 6)).save(root / "a" / "new\nline.png")
    Image.new("RGB", (8, 8), (7, 8, 9)).save(root / "a" / os.fsdecode(b"\xff\xfe.png"))
    data = load_data(root, input_size=8, progress=False)
    assert data.classes == ["a", "b", "c", weird_class] and len(data) == 9
    assert data.fingerprint  # hashing a class name that is not UTF-8 works
    (root / "b" / os.fsdecode(b"bad\n\xe9.png")).write_bytes(b"not an image")
    with pytest.raises(LayercritError) as e:
        load_data(root, input_size=8, progress=False, cache=False)
    msg = str(e.value)
    assert "\n" not in msg and "bad\\n\\xe9.png" in msg, msg
    assert show(b"/x/a\tb\x1b.png".decode("latin-1")) == "/x/a\\tb\\x1b.png"


# ---------------------------------------------------------------------------------------------------------------
# decoding: each pixel mode's exact outcome

def test_plain_modes(tmp_path):
    Image.new("RGB", (4, 4), (1, 2, 3)).save(tmp_path / "rgb.png")
    assert (rgb(tmp_path / "rgb.png") == [1, 2, 3]).all()
    Image.new("L", (4, 4), 77).save(tmp_path / "l.png")
    assert (rgb(tmp_path / "l.png") == 77).all()
    bits = Image.new("1", (4, 4), 0)
    bits.putpixel((0, 0), 1)
    bits.save(tmp_path / "1.png")
    out = rgb(tmp_path / "1.png")
    assert (out[0, 0] == 255).all() and (out[1:] == 0).all()
    pal = Image.new("P", (4, 4), 2)
    pal.putpalette([0, 0, 0, 0, 0, 0, 9, 99, 199] + [0] * 759)
    pal.save(tmp_path / "p.png")
    assert (rgb(tmp_path / "p.png") == [9, 99, 199]).all()
    Image.new("RGB", (4, 4), (200, 100, 50)).save(tmp_path / "x.jpg", quality=100)
    assert np.abs(rgb(tmp_path / "x.jpg").astype(int) - [200, 100, 50]).max() <= 2


def test_transparency_is_dropped_with_one_note(tmp_path):
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 250, 10, 20] + [0] * 762)
    pal.save(tmp_path / "pt.png", transparency=1)  # palette + transparency: PIL would warn on convert("RGB")
    Image.new("RGBA", (4, 4), (5, 6, 7, 0)).save(tmp_path / "rgba.png")
    Image.new("LA", (4, 4), (128, 100)).save(tmp_path / "la.png")
    Image.new("RGBA", (4, 4), (5, 6, 7, 255)).save(tmp_path / "opaque.png")
    notes = Notes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no PIL warning reaches the user
        assert (rgb(tmp_path / "pt.png", notes=notes) == [250, 10, 20]).all()
        assert (rgb(tmp_path / "rgba.png", notes=notes) == [5, 6, 7]).all()
        assert (rgb(tmp_path / "la.png", notes=notes) == 128).all()
        assert (rgb(tmp_path / "opaque.png", notes=notes) == [5, 6, 7]).all()
    assert notes.kinds == {"transparency": [3, str(tmp_path / "la.png"), ""]}  # the opaque one is no news


def test_cmyk_is_converted_with_one_note(tmp_path):
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.tiff")
    notes = Notes()
    assert (rgb(tmp_path / "cmyk.tiff", notes=notes) == [255, 0, 0]).all()
    assert notes.kinds == {"cmyk": [1, str(tmp_path / "cmyk.tiff"), ""]}


def test_high_bit_depth_and_float(tmp_path):
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(tmp_path / "g16.png")  # I;16
    assert (rgb(tmp_path / "g16.png") == 255).all()
    Image.fromarray(np.full((4, 4), 257 * 100, dtype=np.uint16)).save(tmp_path / "g16b.png")
    assert (rgb(tmp_path / "g16b.png") == 100).all()
    png16_rgb(tmp_path / "rgb16.png", np.full((4, 4, 3), [0x12FF, 0x5601, 0xFFFF], dtype=np.uint16))
    assert (rgb(tmp_path / "rgb16.png") == [0x12, 0x56, 0xFF]).all()  # PIL keeps the high byte (0x12FF -> 0x12)
    Image.fromarray(np.full((4, 4), 200, dtype=np.int32)).save(tmp_path / "i32.tiff")  # 32-bit, 8-bit values
    assert (rgb(tmp_path / "i32.tiff") == 200).all()
    Image.fromarray(np.full((4, 4), 70000, dtype=np.int32)).save(tmp_path / "i32big.tiff")
    refused(tmp_path / "i32big.tiff", "has pixel mode I with values in [70000, 70000], beyond 16 bits", "convert it to an 8-bit image")
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)).save(tmp_path / "f.tiff")
    assert (rgb(tmp_path / "f.tiff") == 128).all()
    Image.fromarray(np.full((4, 4), 1.5, dtype=np.float32)).save(tmp_path / "f2.tiff")
    refused(tmp_path / "f2.tiff", "float image with values in [1.5, 1.5], not [0, 1]")
    a = np.zeros((4, 4), dtype=np.float32)
    a[0, 0] = np.nan
    Image.fromarray(a).save(tmp_path / "nan.tiff")
    refused(tmp_path / "nan.tiff", "NaN or Inf")


def test_first_frame_of_a_multipage_file(tmp_path):
    frames = [Image.new("RGB", (4, 4), (i * 50, 0, 0)) for i in (1, 2, 3)]
    frames[0].save(tmp_path / "pages.tiff", save_all=True, append_images=frames[1:])
    assert (rgb(tmp_path / "pages.tiff") == [50, 0, 0]).all()


def test_huge_images_are_refused_before_decoding(tmp_path):
    Image.new("1", (10_000, 10_000)).save(tmp_path / "big.png")  # 100 Mpx: over PIL's warning size
    msg = refused(tmp_path / "big.png", "is 10000 x 10000 px (100,000,000 pixels), over the limit of "
                  f"{LIMIT:,} pixels", "downscale it or remove it")
    png_header_only(tmp_path / "bomb.png", 30_000, 30_000)  # over twice the limit: PIL's own error
    refused(tmp_path / "bomb.png", f"has more than twice {LIMIT:,} pixels", "downscale it or remove it")
    png_header_only(tmp_path / "wide.png", 1, 5000)  # 5000 px, but 256 x 1,280,000 once resized for 224 px
    refused(tmp_path / "wide.png", "resized to 256 px on its shorter side it would have 327,680,000 pixels",
            "crop it", resize=256)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageRefused):
            open_image(str(tmp_path / "big.png"))
    assert msg.count(str(tmp_path)) == 1


def test_tiny_images_are_upscaled(tmp_path):
    root = tmp_path / "d"
    (root / "a").mkdir(parents=True)
    Image.new("RGB", (1, 1), (9, 8, 7)).save(root / "a" / "dot.png")
    Image.new("RGB", (1, 3000), (1, 2, 3)).save(root / "a" / "thin.png")  # fine at 32 px: 32 x 96,000 once resized
    data = load_data(root, input_size=32, progress=False)
    assert data.images.shape == (2, 3, 32, 32)
    assert sorted(tuple(int(v) for v in img[:, 16, 16]) for img in data.images) == [(1, 2, 3), (9, 8, 7)]
    assert all((img == img[:, :1, :1]).all() for img in data.images)


def test_files_that_are_not_images(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    refused(tmp_path / "empty.png", "is empty (0 bytes)", "remove or replace it")
    (tmp_path / "text.jpg").write_text("hello")
    refused(tmp_path / "text.jpg", "is not an image PIL can read")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    refused(tmp_path / "cut.png", "is damaged")


def test_pil_warnings_become_one_aggregated_line(tmp_path, caplog_warn, monkeypatch):
    root = folder(tmp_path / "d")
    for i in range(5):  # five transparent palette PNGs and one CMYK image: two lines in all
        pal = Image.new("P", (8, 8), 1)
        pal.putpalette([0, 0, 0, 250, 10, 20] + [0] * 762)
        pal.save(root / "a" / f"t{i}.png", transparency=1)
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(root / "b" / "k.tiff")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_data(root, input_size=8, progress=False)
    lines = warned(caplog_warn)
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"data folder {root}: 5 images with transparent pixels (e.g. a/t0.png)")
    assert lines[1].startswith(f"data folder {root}: 1 CMYK image (e.g. b/k.tiff)")
    caplog_warn.clear()
    load_data(root, input_size=8, progress=False)  # from the cache: the same lines
    assert warned(caplog_warn) == lines
    caplog_warn.clear()

    real_convert = Image.Image.convert

    def noisy(self, *a, **k):
        warnings.warn("Corrupt EXIF data", UserWarning, stacklevel=2)
        return real_convert(self, *a, **k)

    monkeypatch.setattr(Image.Image, "convert", noisy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_data(root, input_size=8, progress=False, cache=False)
    pil = [line for line in warned(caplog_warn) if "warning from PIL" in line]
    assert pil == [f"data folder {root}: 12 images decoded despite a warning from PIL (e.g. a/0.png: Corrupt EXIF "
                   "data)"]
