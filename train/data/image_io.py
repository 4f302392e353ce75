"""Reading one image file for the loaders: a cheap integrity check on the encoded bytes (so DALI, whose
decoder errors do not name the file, never sees a truncated file), PIL decoding with the face-box crop,
and, for --skip-bad, a strict check that finds every file a decoder would fail on (or decode to garbage)
before the loader commits to it."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DataError
from .imagecheck import strict_jpeg_problem


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


def strict_problem(data: np.ndarray) -> str | None:
    """imagecheck.strict_jpeg_problem at 1/8 scale on a file's bytes (other formats: None, PIL's decode
    reports them)."""
    return strict_jpeg_problem(data.tobytes(), eighth_scale=True)


def read_checked(path: str | Path) -> np.ndarray:
    """read_encoded plus strict_problem: the bytes of an image every decoder takes; DataError names it."""
    data = read_encoded(path)
    problem = strict_problem(data)
    if problem is not None:
        raise DataError(f"{path}: {problem}")
    return data


def decode_checked(path: str | Path, box: np.ndarray | None = None) -> np.ndarray:
    """decode_rgb of bytes that passed read_checked (one read of the file); DataError names a bad file."""
    data = read_checked(path)
    try:
        with Image.open(io.BytesIO(data.tobytes())) as im:
            return crop_box(np.asarray(im.convert("RGB")), box)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot decode image ({e})") from None


class CheckedReads:
    """--skip-bad reads of one sample set: a file is checked strictly (read_checked) the first time it is
    read and again only when its size or modification time changed since, so later epochs pay one stat()
    per file instead of a second decode. Stamps live in one int64 array (16 bytes per sample)."""

    def __init__(self, n: int) -> None:
        self.stamps = np.full((n, 2), -1, np.int64)

    def _changed(self, index: int, path: str | Path) -> np.ndarray | None:
        """The file's new (size, mtime_ns) when it must be checked, None when it passed with these."""
        try:
            st = os.stat(path)
        except OSError as e:
            raise DataError(f"{path}: cannot read image ({e.strerror})") from None
        stamp = np.array([st.st_size, st.st_mtime_ns], np.int64)
        return None if np.array_equal(self.stamps[index], stamp) else stamp

    def encoded(self, index: int, path: str | Path) -> np.ndarray:
        """The file's bytes (read_encoded, plus read_checked's strict check when it is new or changed)."""
        stamp = self._changed(index, path)
        if stamp is None:
            return read_encoded(path)
        data = read_checked(path)
        self.stamps[index] = stamp
        return data

    def decoded(self, index: int, path: str | Path, box: np.ndarray | None = None) -> np.ndarray:
        """decode_rgb, or decode_checked when the file is new or changed."""
        stamp = self._changed(index, path)
        if stamp is None:
            return decode_rgb(path, box)
        image = decode_checked(path, box)
        self.stamps[index] = stamp
        return image
