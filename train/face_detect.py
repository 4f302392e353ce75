"""Face detection and aligned face crops with OpenCV's Haar cascades (shipped by opencv-python-headless 4.x).

`detect_largest_face(image) -> (x, y, w, h) | None` (ddakern.inference's Haar detector) is the one
function `train.prepare` needs; any other detector with that signature can be passed to it instead.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from functools import cache

import numpy as np

Box = tuple[int, int, int, int]
"""x, y, width, height in pixels."""
Detector = Callable[[np.ndarray], "Box | None"]

_LOCAL = threading.local()  # CascadeClassifier objects are not safe to share between threads


def _cv2():
    try:
        import cv2
        import cv2.data  # noqa: F401  (cascade folder; imported before worker threads race for it)
    except ImportError:
        raise RuntimeError("face detection needs OpenCV: pip install 'opencv-python-headless>=4.8,<5'") from None
    if not hasattr(cv2, "CascadeClassifier"):
        raise RuntimeError("OpenCV 5.x has no Haar cascades: pip install 'opencv-python-headless>=4.8,<5'")
    return cv2


@cache
def _cascade_path(name: str) -> str:
    return _cv2().data.haarcascades + name


def _cascade(name: str):
    cache = _LOCAL.__dict__.setdefault("cascades", {})
    if name not in cache:
        cv2 = _cv2()
        c = cv2.CascadeClassifier(_cascade_path(name))
        if c.empty():
            raise RuntimeError(f"OpenCV cascade {_cascade_path(name)} could not be loaded")
        cache[name] = c
    return cache[name]


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 gray of an H x W or H x W x 3 (RGB) image, histogram-equalised for the cascades."""
    cv2 = _cv2()
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return cv2.equalizeHist(np.ascontiguousarray(gray))


def load_detector() -> None:
    """Import OpenCV and build this thread's cascades now (one clear error up front, not per image)."""
    _cascade("haarcascade_frontalface_default.xml")
    _cascade("haarcascade_eye.xml")


def detect_largest_face(image: np.ndarray, min_size: int = 32) -> Box | None:
    """The largest frontal face of an RGB (or gray) uint8 image, or None when there is none: the
    inference package's Haar detector (one per thread), so training crops and predictions see the same faces.
    It searches faces from 20 px up at full resolution with 1.1 steps (the data sets' faces fill most of a
    small image; predict's downscaled, coarser default search is for large photos)."""
    from ddakern.inference.detect import HaarDetector

    detector = _LOCAL.__dict__.get("haar")
    if detector is None:
        detector = _LOCAL.__dict__.setdefault("haar", HaarDetector(min_face=20, scale_factor=1.1))
    rgb = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else np.ascontiguousarray(image)
    boxes = [d.box for d in detector(rgb) if min(d.box[2] - d.box[0], d.box[3] - d.box[1]) >= min_size]
    if not boxes:
        return None
    x0, y0, x1, y1 = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    return x0, y0, x1 - x0, y1 - y0


def eye_angle(image: np.ndarray, box: Box) -> float | None:
    """Roll angle (degrees) of the line through the two largest eyes in the face's upper half, or None."""
    x, y, w, h = box
    top = to_gray(image)[y : y + h // 2, x : x + w]
    eyes = _cascade("haarcascade_eye.xml").detectMultiScale(top, 1.1, 5, minSize=(max(8, w // 10),) * 2)
    if len(eyes) < 2:
        return None
    two = sorted(eyes, key=lambda e: e[2] * e[3])[-2:]
    (ax, ay), (bx, by) = sorted((ex + ew / 2, ey + eh / 2) for ex, ey, ew, eh in two)
    if bx - ax < w / 5:  # the two hits are one eye
        return None
    angle = math.degrees(math.atan2(by - ay, bx - ax))
    return angle if abs(angle) <= 30 else None


def crop_face(image: np.ndarray, box: Box, size: int, margin: float = 0.2, align: bool = True) -> np.ndarray:
    """Square crop around `box` grown by `margin` per side, levelled by the eye line when `align`,
    resized to size x size (size 0 keeps the crop's resolution). Pixels outside the image are black."""
    cv2 = _cv2()
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    side = max(w, h) * (1 + 2 * margin)
    angle = eye_angle(image, box) if align else None
    out = int(round(side)) if size == 0 else size
    scale = out / side
    m = cv2.getRotationMatrix2D((cx, cy), angle or 0.0, scale)
    m[:, 2] += (out / 2 - cx, out / 2 - cy)
    return cv2.warpAffine(image, m, (out, out), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
