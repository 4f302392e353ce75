"""Face detectors (pluggable) and the square, margined crop around each face.

A detector is any callable `rgb uint8 H x W x 3 -> list[Detection]`. Built in:
- `HaarDetector`: OpenCV's frontal-face Haar cascade, whose file ships inside the
  `opencv-python-headless` 4.x wheel (OpenCV 5 no longer ships cascades), so nothing is downloaded;
  the score is the cascade's level weight (larger is more certain).
- `YuNetDetector`: OpenCV's YuNet CNN (`cv2.FaceDetectorYN`) from an ONNX file the user gives
  (e.g. face_detection_yunet_2023mar.onnx from the OpenCV model zoo); score in 0..1.
- `WholeImage` (`detector="none"`): the image is one face already (RAF-DB aligned, FER2013 48x48).

The smallest face searched (`min_face`) is in pixels (>= 1) or a fraction of the image's short side
(< 1); by default 10% of the short side but at most 160 px, so a 1024 x 768 photo is searched for
faces of 77 px and up and an 8000 x 6000 photo for faces of 160 px and up. The Haar cascade runs on
a copy scaled down so that this smallest face is `DETECT_FACE_PX` (40) pixels there (the cascade's
window is 24 px; its recall falls off below about 40), and the boxes are mapped back to full
resolution: the cost per photo is then about the same at any resolution (a 1024 x 768 photo is
searched at 533 x 400). Detectors are safe to call from several threads: an OpenCV detector object
is not, so each call borrows one from the detector's pool, where it is made once and reused (loading
the frontal-face cascade takes about 20 ms; no speed figure changed with the pool, measured).

Boxes are (x0, y0, x1, y1) everywhere: prediction crops with `square_box` + `crop`; `train.prepare`
takes the `largest_face` and crops it with `face_crop` (the same square, levelled by the eye line), so
a training crop and a prediction crop of the same photo come from the same detector and box.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np


class DetectorError(ValueError):
    """A detector that cannot be built (missing package or model file); one line."""


@dataclass(frozen=True)
class Detection:
    """A face box in pixels (x0, y0, x1, y1; x1/y1 exclusive) and the detector's score."""

    box: tuple[int, int, int, int]
    score: float


Detector = Callable[[np.ndarray], list[Detection]]

DEFAULT_MIN_FACE = 0.1
"""Default smallest face: this fraction of the image's short side ..."""
DEFAULT_MIN_FACE_CAP = 160.0
"""... but at most this many pixels (very large photos are searched for every face a user would see)."""
DETECT_FACE_PX = 40.0
"""The smallest searched face is this many pixels in the copy the Haar cascade sees (its window: 24)."""


def parse_min_face(text: str | float) -> float:
    """A --min-face value: pixels (>= 1) or a fraction of the short side (0 < value < 1)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"min face must be a number (pixels >= 1, or a fraction < 1), got {text!r}") from None
    if not (value > 0 and np.isfinite(value)):
        raise ValueError(f"min face must be > 0 (pixels >= 1, or a fraction of the short side < 1), got {text!r}")
    return value


def min_face_px(min_face: float | None, height: int, width: int) -> float:
    """The smallest face searched in an image of this size, in pixels (see the module docstring)."""
    short = min(height, width)
    if min_face is None:
        return min(DEFAULT_MIN_FACE * short, DEFAULT_MIN_FACE_CAP)
    return min_face * short if min_face < 1 else float(min_face)


class ObjectPool:
    """Objects made by `make` lent to one caller at a time and kept for the next: OpenCV's detectors are
    unsafe to share between threads and slow to build, so each thread borrows its own and returns it.
    At most as many are made as calls run at once."""

    def __init__(self, make: Callable[[], object]) -> None:
        self._make = make
        self._free: list[object] = []
        self._lock = threading.Lock()
        self.made = 0

    @contextmanager
    def borrow(self) -> Iterator:
        with self._lock:
            obj = self._free.pop() if self._free else None
        if obj is None:
            obj = self._make()
            with self._lock:
                self.made += 1
        try:
            yield obj
        finally:
            with self._lock:
                self._free.append(obj)


def _cv2():
    try:
        import cv2
    except ImportError:
        raise DetectorError(
            "face detection needs OpenCV: pip install 'opencv-python-headless>=4.8,<5' (or use detector='none')"
        ) from None
    return cv2


class HaarDetector:
    """OpenCV's Haar cascade for frontal faces (shipped with opencv-python-headless 4.x), run on a copy
    scaled so that the smallest searched face (`min_face`, see the module docstring) is 40 px there.
    Window sizes step by `scale_factor` 1.2 (1.1 costs 1.6x the time for about the same recall on
    faces >= 1.25x the smallest, measured on pasted faces of 40-300 px in 1024 x 768 photos).

    Thread-safe: a cv2.CascadeClassifier is not (concurrent calls return wrong boxes or raise), so
    each call borrows one from the detector's pool (`ObjectPool`).
    """

    def __init__(
        self,
        cascade: str = "haarcascade_frontalface_default.xml",
        *,
        min_face: float | None = None,
        scale_factor: float = 1.2,
        min_neighbors: int = 5,
        min_score: float = 2.0,
    ) -> None:
        cv2 = _cv2()
        folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
        path = Path(cascade) if Path(cascade).is_file() else Path(folder or "") / cascade
        if not hasattr(cv2, "CascadeClassifier") or not path.is_file():
            raise DetectorError(
                f"OpenCV {cv2.__version__} has no Haar cascade {cascade} (OpenCV 5 dropped them): "
                "install 'opencv-python-headless>=4.8,<5', or use --detector yunet / none"
            )
        self.path = str(path)
        self.pool = ObjectPool(lambda: _cv2().CascadeClassifier(self.path))
        with self.pool.borrow() as classifier:
            if classifier.empty():
                raise DetectorError(f"{path}: OpenCV cannot read this cascade file")
        self.min_face = None if min_face is None else parse_min_face(min_face)
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors
        self.min_score = min_score  # level weight below which a detection is dropped (small false positives)

    def scale(self, height: int, width: int) -> float:
        """The factor (<= 1) by which an image of this size is shrunk before the cascade runs."""
        return min(1.0, DETECT_FACE_PX / min_face_px(self.min_face, height, width))

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        cv2 = _cv2()
        h, w = rgb.shape[:2]
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        s = self.scale(h, w)
        if s < 1.0:
            size = (max(1, round(w * s)), max(1, round(h * s)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        sx, sy = w / gray.shape[1], h / gray.shape[0]
        side = max(1, int(min_face_px(self.min_face, h, w) / max(sx, sy)))
        # no global histogram equalisation: in a mostly uniform photo it crushes the face's contrast
        # (a 512 px face in an 8000 x 6000 photo was missed); the cascade normalises each window itself
        with self.pool.borrow() as classifier:
            rects, _, weights = classifier.detectMultiScale3(
                gray, self.scale_factor, self.min_neighbors, minSize=(side, side), outputRejectLevels=True
            )
        found = []
        for (x, y, bw, bh), score in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1)):
            if score >= self.min_score:
                box = (round(x * sx), round(y * sy), min(w, round((x + bw) * sx)), min(h, round((y + bh) * sy)))
                found.append(Detection(tuple(int(v) for v in box), float(score)))
        return sorted(found, key=lambda d: (d.box[0], d.box[1]))


class YuNetDetector:
    """OpenCV's YuNet face detector from its ONNX file (given by the user; nothing is downloaded).

    Runs at full resolution; faces smaller than `min_face` are dropped. Each call borrows a
    cv2.FaceDetectorYN from the detector's pool (its input size is state).
    """

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        min_face: float | None = None,
        score_threshold: float = 0.7,
        nms_threshold: float = 0.3,
    ) -> None:
        model = Path(model)
        if not model.is_file():
            raise DetectorError(f"{model}: YuNet ONNX file not found (face_detection_yunet_*.onnx, OpenCV model zoo)")
        self.model, self.thresholds = str(model), (score_threshold, nms_threshold)
        self.min_face = None if min_face is None else parse_min_face(min_face)
        self.pool = ObjectPool(self._load)
        with self.pool.borrow():  # load now, so that a bad file is an error here
            pass

    def _load(self):
        cv2 = _cv2()
        try:
            return cv2.FaceDetectorYN.create(self.model, "", (320, 320), *self.thresholds)
        except cv2.error as e:
            raise DetectorError(
                f"{self.model}: OpenCV cannot load this YuNet model ({str(e).strip().splitlines()[-1]})"
            ) from None

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        cv2 = _cv2()
        h, w = rgb.shape[:2]
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        with self.pool.borrow() as net:
            net.setInputSize((w, h))
            _, faces = net.detect(bgr)
        smallest = min_face_px(self.min_face, h, w)
        out = []
        for f in [] if faces is None else faces:
            x, y, bw, bh = (float(v) for v in f[:4])
            if max(bw, bh) < smallest:
                continue
            box = (max(0, int(x)), max(0, int(y)), min(w, int(x + bw)), min(h, int(y + bh)))
            out.append(Detection(box, float(f[-1])))
        return sorted(out, key=lambda d: (d.box[0], d.box[1]))


class WholeImage:
    """No detection: the whole image is one (already cropped) face with score 1."""

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        return [Detection((0, 0, int(rgb.shape[1]), int(rgb.shape[0])), 1.0)]


DETECTORS = ("haar", "yunet", "none")


def make_detector(
    name: str | Detector = "haar", *, yunet_model: str | os.PathLike | None = None, min_face: float | None = None
) -> Detector:
    """A detector by name ("haar", "yunet" with `yunet_model`, "none"), or any callable as is.

    `min_face` (pixels >= 1 or a fraction < 1 of the short side; None: the default) applies to the
    built-in detectors only: with "none" or a callable it is an error rather than silently ignored.
    """
    if callable(name) or name == "none":
        if min_face is not None:
            raise DetectorError("min face applies to the haar and yunet detectors, not to 'none' or a callable")
        return name if callable(name) else WholeImage()
    if name == "haar":
        return HaarDetector(min_face=min_face)
    if name == "yunet":
        if yunet_model is None:
            raise DetectorError("detector 'yunet' needs its ONNX file (--yunet-model PATH)")
        return YuNetDetector(yunet_model, min_face=min_face)
    raise DetectorError(f"unknown detector {name!r} (choose {', '.join(DETECTORS)} or pass a callable)")


def square_box(box: tuple[int, int, int, int], margin: float) -> tuple[int, int, int, int]:
    """The square around `box`'s centre whose side is the box's longer side times (1 + 2 * margin)."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1.0 + 2.0 * margin)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    half = side / 2.0
    return int(round(cx - half)), int(round(cy - half)), int(round(cx + half)), int(round(cy + half))


def crop(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """rgb[y0:y1, x0:x1], with the parts outside the image filled by replicating its border."""
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = box
    if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:
        return rgb[y0:y1, x0:x1]
    ys = np.clip(np.arange(y0, y1), 0, h - 1)
    xs = np.clip(np.arange(x0, x1), 0, w - 1)
    return rgb[ys[:, None], xs[None, :]]


def largest_face(detections: Sequence[Detection]) -> Detection | None:
    """The detection with the largest box area (the first of equals), or None when there is none."""
    return max(detections, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]), default=None)


@cache
def _eyes() -> HaarDetector:
    """OpenCV's eye cascade (its pool of classifiers is what `eye_angle` uses)."""
    return HaarDetector("haarcascade_eye.xml")


def eye_angle(rgb: np.ndarray, box: tuple[int, int, int, int]) -> float | None:
    """Roll angle (degrees, within +-30) of the line through the two largest eyes found in the upper half
    of the face `box`, or None when two distinct eyes are not found."""
    cv2 = _cv2()
    x0, y0, x1, y1 = box
    w = x1 - x0
    top = crop(rgb, (x0, y0, x1, y0 + (y1 - y0) // 2))
    gray = cv2.equalizeHist(np.ascontiguousarray(cv2.cvtColor(np.ascontiguousarray(top), cv2.COLOR_RGB2GRAY)))
    with _eyes().pool.borrow() as classifier:
        eyes = classifier.detectMultiScale(gray, 1.1, 5, minSize=(max(8, w // 10),) * 2)
    if len(eyes) < 2:
        return None
    two = sorted(eyes, key=lambda e: e[2] * e[3])[-2:]
    (ax, ay), (bx, by) = sorted((ex + ew / 2, ey + eh / 2) for ex, ey, ew, eh in two)
    if bx - ax < w / 5:  # the two hits are one eye
        return None
    angle = math.degrees(math.atan2(by - ay, bx - ax))
    return angle if abs(angle) <= 30 else None


def face_crop(
    rgb: np.ndarray, box: tuple[int, int, int, int], margin: float, size: int = 0, align: bool = False
) -> np.ndarray:
    """`crop(rgb, square_box(box, margin))`, turned about its centre to level the eye line when `align`
    (and two eyes are found), resized to size x size (0: as cropped). Outside the image: its border
    replicated, as `crop` does."""
    cv2 = _cv2()
    square = square_box(box, margin)
    side = square[2] - square[0]
    angle = eye_angle(rgb, box) if align else None
    if angle is None:
        face = crop(rgb, square)
    else:
        centre = ((square[0] + square[2]) / 2.0, (square[1] + square[3]) / 2.0)
        m = cv2.getRotationMatrix2D(centre, angle, 1.0)
        m[:, 2] += (side / 2.0 - centre[0], side / 2.0 - centre[1])
        face = cv2.warpAffine(rgb, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if size == 0 or size == side:
        return np.ascontiguousarray(face)
    return cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA if size < side else cv2.INTER_LINEAR)
