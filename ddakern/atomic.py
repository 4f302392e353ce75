"""Atomic file writes: a temporary file in the target's folder, renamed onto the target with os.replace.

A reader never sees a half-written file and a crash leaves the earlier file alone. The temporary is
named `.<name>.<random><suffix>` (default suffix `.tmp`, which run folders clean up at start); the
published file gets the permissions of any file the user creates (0666 & ~umask), not mkstemp's 0600.
A write that fails (a full disk) removes its temporary and raises WriteError, which names the target file.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


class WriteError(OSError):
    """A file that could not be written (the errno of the cause is kept); `str()` is one line:
    `cannot write PATH: no space left on device`. The earlier file at PATH, if any, is untouched."""

    def __init__(self, path: str | os.PathLike, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause) or type(cause).__name__, os.fspath(path))
        self.path = Path(path)

    def __str__(self) -> str:
        why = self.strerror or errno.errorcode.get(self.errno or 0, "")
        return f"cannot write {self.path}: {why[:1].lower() + why[1:]}"


def _explained(e: OSError) -> bool:
    """A WriteError (predict's OutputError is one) already says what failed and where."""
    return isinstance(e, WriteError)


def current_umask() -> int:
    """The process umask, read from /proc where possible (os.umask can only read it by setting it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set it and put it back at once
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike) -> None:
    """Give a file made by mkstemp (mode 0600) the permissions of any file the user creates."""
    os.chmod(path, 0o666 & ~current_umask())


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Apply the umask to the temporary file, then os.replace it onto `path`."""
    apply_umask(tmp)
    os.replace(tmp, path)
    return Path(path)


def _mkstemp(path: Path, suffix: str) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)


def new_temp(path: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """An empty temporary file beside `path` (created, closed) for a writer that wants a file name and
    outlives one block (a video writer); finish with `publish` or unlink it."""
    fd, tmp = _mkstemp(Path(path), suffix)
    os.close(fd)
    return Path(tmp)


@contextmanager
def temp_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file path beside `path` for writers that want a file name (cv2, savefig, exporters);
    published onto `path` when the block ends normally, removed when it raises (a builtin OSError in the
    block, the writer's, becomes a WriteError naming `path`)."""
    try:
        tmp = new_temp(path, suffix)
    except OSError as e:
        raise WriteError(path, e) from None
    try:
        yield tmp
        publish(tmp, path)
    except OSError as e:
        if _explained(e):
            raise
        raise WriteError(path, e) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def open_temp(path: str | os.PathLike, suffix: str = ".tmp", **text: Any) -> tuple[IO[Any], Path]:
    """An open temporary file beside `path` (text mode when `text` holds open() options such as
    encoding, else binary) and its path, for long-lived writers; finish with `publish` or unlink it."""
    fd, tmp = _mkstemp(Path(path), suffix)
    return os.fdopen(fd, "w" if text else "wb", **text), Path(tmp)


def write_with(path: str | os.PathLike, write: Callable[[IO[bytes]], Any], *, fsync: bool = False) -> Path:
    """Call `write(binary file)` on a temporary beside `path`, then publish it; `fsync` forces the
    bytes to disk before the rename (checkpoints). Any failure removes the temporary; a builtin OSError (a
    full disk, in the write, the flush, the fsync or the rename) is raised as a WriteError naming `path`."""
    try:
        fh, tmp = open_temp(path)
    except OSError as e:
        raise WriteError(path, e) from None
    try:
        with fh:
            write(fh)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        return publish(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not _explained(e):
            raise WriteError(path, e) from None
        raise


def write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> Path:
    """Write `data` to `path` atomically."""
    return write_with(path, lambda fh: fh.write(data), fsync=fsync)


def write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return write_bytes(path, text.encode("utf-8"), fsync=fsync)


def _os_error_in(e: BaseException) -> OSError | None:
    """The OSError `e` is or arose from (its __cause__ / __context__ chain), if any."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save `obj` to `path` atomically, fsynced (a checkpoint must survive a crash after the rename).
    A write that fails inside torch's zip writer surfaces as its RuntimeError ("unexpected pos ...") raised
    while the OSError (a full disk) is handled: the OSError is what is reported, as a WriteError."""
    import torch

    def save(fh: IO[bytes]) -> None:
        try:
            torch.save(obj, fh)
        except Exception as e:
            cause = _os_error_in(e)
            if cause is None:
                raise
            raise cause from None

    return write_with(path, save, fsync=True)


__all__ = [
    "WriteError",
    "apply_umask",
    "current_umask",
    "new_temp",
    "open_temp",
    "publish",
    "temp_path",
    "torch_save",
    "write_bytes",
    "write_text",
    "write_with",
]
