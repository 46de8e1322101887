"""Where layercrit keeps downloaded checkpoints and decoded evaluation data, and how it writes outputs.

- :func:`cache_dir`: ``$LAYERCRIT_CACHE`` (default ``~/.cache/layercrit``).
- :func:`safe_name` / :func:`path_inside`: the one place where a user-supplied name (a model id, a
  study id, ...) becomes a file or folder name; it must stay a plain name inside its output folder.
- :func:`atomic_write`: every output file is written to a temporary file in the target folder,
  fsynced and renamed over the target; on failure the temporary is removed and one
  :class:`LayercritError` names the path and the cause (``errno``'s meaning).
- :func:`os_error`: an ``OSError`` as that one line; :func:`writing_into` does the same for a
  block of code that writes into an output folder.
- :func:`exclusive_lock`: one process at a time in a folder (a training run's), released when the
  process ends however it ends.
"""
from __future__ import annotations

import contextlib
import errno as errno_
import hashlib
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterator

from .errors import BusyError, LayercritError
from .validate import fail

try:  # POSIX; elsewhere exclusive_lock locks nothing
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


def cache_dir(*parts: str) -> Path:
    """``$LAYERCRIT_CACHE`` (default ``~/.cache/layercrit``), joined with ``parts``."""
    root = os.environ.get("LAYERCRIT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "layercrit"
    return Path(root, *parts)


MAX_NAME_LENGTH = 200  # bytes; file systems allow 255, suffixes are added to some names


def name_problem(name) -> str | None:
    """Why ``name`` cannot be used as a file or folder name of its own, or None if it can."""
    if not isinstance(name, str):
        return f"it is a {type(name).__name__}, not text"
    if not name or not name.strip():
        return "it is empty"
    if "\x00" in name:
        return "it holds a NUL character"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "it holds a control character"
    if "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
        return "it holds a path separator"
    if name in (".", ".."):
        return f"it is '{name}'"
    if name.startswith("."):
        return "it starts with '.' (a hidden name)"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_LENGTH:
        return f"it is longer than {MAX_NAME_LENGTH} bytes"
    return None


def safe_name(name, what: str = "name") -> str:
    """``name`` if it is a plain file/folder name (no separators, no ``..``, no NUL or control
    characters, not empty, not hidden), else one :class:`LayercritError` naming ``what``."""
    problem = name_problem(name)
    if problem:
        raise LayercritError(f"{what} {name!r} cannot be used as a file name ({problem}): use letters, digits, "
                             "'-', '_' and '.'")
    return name


def path_inside(folder: str | Path, name: str, what: str = "name", suffix: str = "") -> Path:
    """``folder / (name + suffix)`` for a user-supplied ``name``, checked to stay inside ``folder``."""
    safe_name(name, what)
    folder = Path(folder)
    path = folder / f"{name}{suffix}"
    base = os.path.realpath(folder)
    if os.path.commonpath([base, os.path.realpath(path)]) != base:  # e.g. a symlink planted there
        raise LayercritError(f"{what} {name!r} leads outside {folder}: choose another name")
    return path


def describe_os_error(e: OSError) -> str:
    """The cause of an ``OSError`` in words (``errno``'s meaning, e.g. 'No space left on device')."""
    if e.errno is not None:
        return os.strerror(e.errno)
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:200]


_HINTS = {errno_.ENOSPC: "free some space or write elsewhere", errno_.EDQUOT: "free some space or write elsewhere",
          errno_.EROFS: "write to a writable place", errno_.EACCES: "check the permissions or write elsewhere",
          errno_.EPERM: "check the permissions or write elsewhere", errno_.EISDIR: "give a file name, not a folder",
          errno_.ENOTDIR: "check the path", errno_.ENOENT: "check the path",
          errno_.EEXIST: "choose another name or delete it"}


def os_error(e: OSError, path: str | Path, action: str = "write") -> LayercritError:
    """One-line :class:`LayercritError` for ``e``: what could not be done to ``path``, why, what to do."""
    hint = _HINTS.get(e.errno or 0, "check the path and the disk")
    return LayercritError(f"cannot {action} {path}: {describe_os_error(e)}: {hint}")


@contextlib.contextmanager
def writing_into(path: str | Path, action: str = "write") -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into one :class:`LayercritError` about ``path``."""
    try:
        yield
    except LayercritError:
        raise
    except OSError as e:
        raise os_error(e, getattr(e, "filename", None) or path, action) from None


def check_output_file(path: str | Path, what: str = "{out}") -> Path:
    """A file ``path`` can be written: its folder exists and ``path`` is not a folder. ``what``: the option
    it came from, as a ``{field}`` placeholder (a ConfigError), or words (a LayercritError)."""
    path = Path(path)
    if path.is_dir():
        fail(what, f"{what} {path} is a folder: give a file name")
    if not path.parent.is_dir():
        fail(what, f"folder for {what} does not exist: {path.parent}: create it first")
    return path


@contextlib.contextmanager
def atomic_write(path: str | Path, *, what: str = "{out}") -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; once the block has written it, fsync it and
    rename it over ``path``. On any failure the temporary is removed and nothing changes at
    ``path``; an ``OSError`` becomes one :class:`LayercritError` naming ``path`` and the cause.
    """
    path = check_output_file(path, what)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as e:
        raise os_error(e, path) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and not isinstance(e, LayercritError):
            raise os_error(e, path) from None
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the folder allows it
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_text(path: str | Path, text: str, *, what: str = "{out}") -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, what=what) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


LOCK_FILE = ".lock"


def _holder(fd: int) -> str:
    """What the lock file open at ``fd`` says of its holder ("pid N on HOST")."""
    return os.read(fd, 200).decode(errors="replace").strip() or "another process"


def _try_flock(fd: int, tries: int = 4) -> bool:
    """An exclusive flock on ``fd`` without waiting for a holder; a few short retries ride out a momentary
    shared lock taken by :func:`lock_holder` to look."""
    for attempt in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < tries:
                time.sleep(0.05)
    return False


@contextlib.contextmanager
def exclusive_lock(folder: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder/.lock`` (created, with the holder's pid and host) for the
    block; :class:`BusyError` at once where another process holds it. The kernel releases it when the
    holder exits, even on SIGKILL; the file is removed on a normal exit. ``what`` names the folder's
    contents in the message ("run folder"). No lock where ``fcntl`` is missing (Windows)."""
    folder = Path(folder)
    if fcntl is None:  # pragma: no cover
        yield
        return
    path = folder / LOCK_FILE
    for _ in range(5):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise os_error(e, path, "create the lock file") from None
        if not _try_flock(fd):
            holder = _holder(fd)
            os.close(fd)
            raise BusyError(f"{what} {folder} is in use by {holder} right now: wait for it to finish, or use "
                            "another folder") from None
        try:  # the holder before us may have removed the file as we opened it: lock the file that is there
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    else:  # pragma: no cover  (a lock file replaced five times in a row)
        raise BusyError(f"{what} {folder} is in use by another process right now: try again later")
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        yield
    finally:
        path.unlink(missing_ok=True)  # still holding the lock: a newcomer finds no file, or its own new one
        os.close(fd)


def lock_holder(folder: str | Path) -> str | None:
    """Who holds ``folder``'s :func:`exclusive_lock` right now ("pid N on HOST"), or None where nobody does."""
    path = Path(folder) / LOCK_FILE
    if fcntl is None or not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(fd)
    finally:
        os.close(fd)  # closing drops the shared lock taken to look
    return None


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
