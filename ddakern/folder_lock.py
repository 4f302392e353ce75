"""Own an output folder while writing into it: an exclusive flock on the folder itself.

Used by `predict --out` and by `train.run` / `train.fuse --out`, so that a second run cannot interleave
its files with the first one's, nor take the first run's temporaries for stale ones. The kernel drops
the lock when its descriptor closes or the process ends, however it ends: a crashed or killed run
leaves nothing stuck and no lock file behind. flock locks belong to one open of the folder, so a
second `lock_folder` of the same folder is refused even within one process.
"""

from __future__ import annotations

import os
from pathlib import Path


class FolderBusy(RuntimeError):
    """Another open of the folder (another run) holds its lock."""


def lock_folder(folder: str | os.PathLike) -> int | None:
    """Hold an exclusive flock on the existing folder `folder` without waiting; returns the descriptor to
    keep open (`release` it, or let the process end), None where flock does not exist (Windows) or the
    filesystem refuses it (some network filesystems): then the caller runs unlocked. FolderBusy when
    another run holds it."""
    try:
        import fcntl

        fd = os.open(Path(folder), os.O_RDONLY)
    except (ImportError, OSError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FolderBusy(str(folder)) from None
    except OSError:  # e.g. a network filesystem without flock: run unlocked
        os.close(fd)
        return None
    return fd


def release(fd: int | None) -> None:
    """Give up a lock taken by `lock_folder` (None: nothing was locked)."""
    if fd is not None:
        os.close(fd)


__all__ = ["FolderBusy", "lock_folder", "release"]
