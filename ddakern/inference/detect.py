"""Face detectors (pluggable) and the square, margined crop around each face.

A detector is any callable `rgb uint8 H x W x 3 -> list[Detection]`. Built in:
- `HaarDetector`: OpenCV's frontal-face Haar cascade, whose file ships inside the
  `opencv-python-headless` 4.x wheel (OpenCV 5 no longer ships cascades), so nothing is downloaded;
  the score is the cascade's level weight (larger is more certain).
- `YuNetDetector`: OpenCV's YuNet CNN (`cv2.FaceDetectorYN`) from an ONNX file the user gives
  (e.g. face_detection_yunet_2023mar.onnx from the OpenCV model zoo); score in 0..1.
- `WholeImage` (`detector="none"`): the image is one face already (RAF-DB aligned, FER2013 48x48).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
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


def _cv2():
    try:
        import cv2
    except ImportError:
        raise DetectorError(
            "face detection needs OpenCV: pip install 'opencv-python-headless>=4.8,<5' (or use detector='none')"
        ) from None
    return cv2


class HaarDetector:
    """OpenCV's Haar cascade for frontal faces (shipped with opencv-python-headless 4.x)."""

    def __init__(
        self,
        cascade: str = "haarcascade_frontalface_default.xml",
        *,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size_fraction: float = 0.04,
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
        self.classifier = cv2.CascadeClassifier(str(path))
        if self.classifier.empty():
            raise DetectorError(f"{path}: OpenCV cannot read this cascade file")
        self.scale_factor, self.min_neighbors, self.min_size_fraction = scale_factor, min_neighbors, min_size_fraction
        self.min_score = min_score  # level weight below which a detection is dropped (small false positives)

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        cv2 = _cv2()
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        side = max(20, int(self.min_size_fraction * min(gray.shape)))
        rects, _, weights = self.classifier.detectMultiScale3(
            gray, self.scale_factor, self.min_neighbors, minSize=(side, side), outputRejectLevels=True
        )
        found = [
            Detection((int(x), int(y), int(x + w), int(y + h)), float(s))
            for (x, y, w, h), s in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1))
        ]
        return sorted((d for d in found if d.score >= self.min_score), key=lambda d: (d.box[0], d.box[1]))


class YuNetDetector:
    """OpenCV's YuNet face detector from its ONNX file (given by the user; nothing is downloaded)."""

    def __init__(self, model: str | os.PathLike, *, score_threshold: float = 0.7, nms_threshold: float = 0.3) -> None:
        cv2 = _cv2()
        model = Path(model)
        if not model.is_file():
            raise DetectorError(f"{model}: YuNet ONNX file not found (face_detection_yunet_*.onnx, OpenCV model zoo)")
        try:
            self.net = cv2.FaceDetectorYN.create(str(model), "", (320, 320), score_threshold, nms_threshold)
        except cv2.error as e:
            raise DetectorError(
                f"{model}: OpenCV cannot load this YuNet model ({str(e).strip().splitlines()[-1]})"
            ) from None

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        cv2 = _cv2()
        h, w = rgb.shape[:2]
        self.net.setInputSize((w, h))
        _, faces = self.net.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        out = []
        for f in [] if faces is None else faces:
            x, y, bw, bh = (float(v) for v in f[:4])
            box = (max(0, int(x)), max(0, int(y)), min(w, int(x + bw)), min(h, int(y + bh)))
            out.append(Detection(box, float(f[-1])))
        return sorted(out, key=lambda d: (d.box[0], d.box[1]))


class WholeImage:
    """No detection: the whole image is one (already cropped) face with score 1."""

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        return [Detection((0, 0, int(rgb.shape[1]), int(rgb.shape[0])), 1.0)]


DETECTORS = ("haar", "yunet", "none")


def make_detector(name: str | Detector = "haar", *, yunet_model: str | os.PathLike | None = None) -> Detector:
    """A detector by name ("haar", "yunet" with `yunet_model`, "none"), or any callable as is."""
    if callable(name):
        return name
    if name == "haar":
        return HaarDetector()
    if name == "yunet":
        if yunet_model is None:
            raise DetectorError("detector 'yunet' needs its ONNX file (--yunet-model PATH)")
        return YuNetDetector(yunet_model)
    if name == "none":
        return WholeImage()
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
