"""Reading one image file for the loaders: a cheap integrity check on the encoded bytes (so DALI, whose
decoder errors do not name the file, never sees a truncated file), PIL decoding with the face-box crop,
and the per-loader count of files skipped with --skip-bad."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DataError

log = logging.getLogger("train.data")


def encoded_problem(data: bytes | np.ndarray) -> str | None:
    """None when the bytes look like a complete JPEG/PNG (or another format we cannot check), else why."""
    head = bytes(data[:8])
    if not head:
        return "empty file"
    if head[:2] == b"\xff\xd8":
        return None if b"\xff\xd9" in bytes(data[-1024:]) else "truncated JPEG (no end-of-image marker)"
    if head == b"\x89PNG\r\n\x1a\n":
        return None if b"IEND" in bytes(data[-16:]) else "truncated PNG (no IEND chunk)"
    return None


def crop_box(image: np.ndarray, box: np.ndarray | None) -> np.ndarray:
    """image[y:y+h, x:x+w] for box (x, y, w, h); parts outside the image are black (as DALI's pad)."""
    if box is None:
        return image
    x, y, w, h = (int(v) for v in box)
    out = np.zeros((h, w) + image.shape[2:], image.dtype)
    ih, iw = image.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, iw), min(y + h, ih)
    if x1 > x0 and y1 > y0:
        out[y0 - y : y1 - y, x0 - x : x1 - x] = image[y0:y1, x0:x1]
    return out


def read_encoded(path: str | Path) -> np.ndarray:
    """The file's bytes as uint8; DataError names the file when it is missing, unreadable or truncated."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise DataError(f"{path}: cannot read image ({e.strerror})") from None
    problem = encoded_problem(data)
    if problem is not None:
        raise DataError(f"{path}: {problem}")
    return data


def decode_rgb(path: str | Path, box: np.ndarray | None = None) -> np.ndarray:
    """uint8 H x W x 3 RGB of an image file, cropped to `box`; DataError names a bad file."""
    try:
        with Image.open(path) as im:
            return crop_box(np.asarray(im.convert("RGB")), box)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot decode image ({e})") from None


class SkipCounter:
    """Counts files skipped by --skip-bad in one loader and logs the first one."""

    def __init__(self) -> None:
        self.count = 0

    def skip(self, error: DataError) -> None:
        if self.count == 0:
            log.warning(f"--skip-bad: skipping bad file(s) (first: {error})")
        self.count += 1
