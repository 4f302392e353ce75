"""Atomic publication of output files: a temporary file in the target's folder renamed into place."""

from __future__ import annotations

import os
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """chmod the temp file to the usual 0666 & ~umask (mkstemp makes it 0600), then os.replace it onto path."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
    return Path(path)
