"""`Predictor`: faces in an image -> class probabilities, from a train.run / train.fuse checkpoint.

    from ddakern.inference import Predictor
    p = Predictor.from_checkpoint("runs/x/best.pt")           # CPU or CUDA ("auto"), Haar detector
    result = p.predict("photo.jpg")                          # or a PIL image, array, tensor
    for face in result.faces:
        print(face.box, face.score, face.label, face.probabilities)

Model, classes, input size and normalisation come from the checkpoint. Crops of all images passed
to `predict_many` are classified together in batches of `batch_size`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddakern.inference.backends import OnnxBackend, TorchBackend
from ddakern.inference.checkpoint import ModelSpec, load_model
from ddakern.inference.detect import Detection, Detector, crop, make_detector, square_box
from ddakern.inference.images import ColorOrder, ImageInput, preprocess, to_rgb

NO_FACE_NOTE = "no face found"


@dataclass
class FaceRecord:
    """One face: detector box and score, the square crop box fed to the model, probabilities, top class."""

    box: tuple[int, int, int, int]
    score: float
    crop_box: tuple[int, int, int, int]
    probabilities: dict[str, float]
    label: str
    crop: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": list(self.box),
            "score": self.score,
            "crop_box": list(self.crop_box),
            "label": self.label,
            "probabilities": self.probabilities,
        }


@dataclass
class ImageResult:
    """The faces of one image (left to right); `note` says why there are none."""

    faces: list[FaceRecord]
    width: int
    height: int
    note: str | None = None


class Predictor:
    """Detect faces, crop them square with a margin, classify them in batches."""

    def __init__(
        self,
        backend: Any,
        spec: ModelSpec,
        *,
        detector: str | Detector = "haar",
        yunet_model: str | os.PathLike | None = None,
        margin: float = 0.15,
        batch_size: int = 32,
        keep_crops: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.backend, self.spec = backend, spec
        self.detector = make_detector(detector, yunet_model=yunet_model)
        self.whole_image = detector == "none"
        self.margin, self.batch_size, self.keep_crops = margin, batch_size, keep_crops
        self.mean, self.std = spec.mean_std

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        *,
        device: str | torch.device = "auto",
        backend: str = "torch",
        fused_ops: bool = False,
        **kwargs: Any,
    ) -> Predictor:
        """From a checkpoint (`.pt`; backend "torch" or "torch.compile") or an exported `.onnx`
        (backend "onnxruntime", chosen automatically for that suffix)."""
        if backend == "onnxruntime" or Path(path).suffix == ".onnx":
            ort = OnnxBackend(path, device)
            return cls(ort, ort.spec, **kwargs)
        if backend not in ("torch", "torch.compile"):
            raise ValueError(f"unknown backend {backend!r} (torch, torch.compile or onnxruntime)")
        model, spec = load_model(path, fused_ops=fused_ops)
        return cls(TorchBackend(model, device, compile=backend == "torch.compile"), spec, **kwargs)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.class_names

    def detect(self, rgb: np.ndarray) -> list[tuple[Detection, tuple[int, int, int, int], np.ndarray]]:
        """(detection, square crop box, crop) for every face of an RGB image."""
        found = []
        for d in self.detector(rgb):
            box = d.box if self.whole_image else square_box(d.box, self.margin)
            found.append((d, box, crop(rgb, box)))
        return found

    def classify(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """N x C probabilities of RGB uint8 face crops, in batches of `batch_size`."""
        out = [np.zeros((0, len(self.class_names)), np.float32)]
        for start in range(0, len(crops), self.batch_size):
            x = preprocess(list(crops[start : start + self.batch_size]), self.spec.image_size, self.mean, self.std)
            out.append(self.backend(x))
        return np.concatenate(out)

    def predict(self, image: ImageInput, color: ColorOrder = "rgb") -> ImageResult:
        """The faces of one image (path, PIL image, numpy array with `color` order, or tensor)."""
        return self.predict_many([image], color)[0]

    def predict_many(self, images: Sequence[ImageInput], color: ColorOrder = "rgb") -> list[ImageResult]:
        """One ImageResult per image; all their faces are classified in shared batches."""
        rgbs = [to_rgb(im, color) for im in images]
        found = [self.detect(rgb) for rgb in rgbs]
        probs = self.classify([c for faces in found for _, _, c in faces])
        results, i = [], 0
        for rgb, faces in zip(rgbs, found):
            records = []
            for det, box, c in faces:
                records.append(self._record(det, box, c, probs[i]))
                i += 1
            note = None if records else NO_FACE_NOTE
            results.append(ImageResult(records, int(rgb.shape[1]), int(rgb.shape[0]), note))
        return results

    def _record(self, det: Detection, box: tuple[int, int, int, int], c: np.ndarray, p: np.ndarray) -> FaceRecord:
        names = self.class_names
        return FaceRecord(
            box=det.box,
            score=round(det.score, 6),
            crop_box=box,
            probabilities={n: float(v) for n, v in zip(names, p)},
            label=names[int(np.argmax(p))],
            crop=c if self.keep_crops else None,
        )
