"""`Predictor`: faces in an image -> class probabilities, from a train.run / train.fuse checkpoint.

    from ddakern.inference import Predictor
    p = Predictor.from_checkpoint("runs/x/best.pt")           # CPU or CUDA ("auto"), Haar detector
    result = p.predict("photo.jpg")                          # or a PIL image, array, tensor
    for face in result.faces:
        print(face.box, face.score, face.label, face.probabilities)

Model, classes, input size and normalisation come from the checkpoint. Crops of all images passed
to `predict_many` / `predict_stream` are classified together in batches of `batch_size`, while
`workers` threads decode and detect the next images (`ddakern.inference.prefetch`).

Thread-safe: `predict` may be called from several threads at once and gives what it gives alone
(each thread detects with its own OpenCV object; classifier calls are serialised by a lock).
`min_face` is the smallest face searched (pixels >= 1, or a fraction < 1 of the short side; default
10% of the short side, at most 160 px; see `ddakern.inference.detect`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddakern.inference.backends import OnnxBackend, TorchBackend
from ddakern.inference.checkpoint import ModelSpec, load_model
from ddakern.inference.detect import Detection, Detector, crop, make_detector, square_box
from ddakern.inference.images import ColorOrder, ImageError, ImageInput, preprocess, to_rgb
from ddakern.inference.prefetch import StreamStats, stream

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


@dataclass
class Prepared:
    """An input decoded and its faces found and cropped: (detection, square crop box, crop) each.

    `rgb` is kept when asked (annotation, attention); `error` is the ImageError of an unreadable
    input; `skip` marks an item passed through without detection (a video frame not processed).
    The crops are preprocessed in the classifying thread (worker threads stay out of PyTorch's
    thread pool, which would otherwise be oversubscribed).
    """

    item: Any
    rgb: np.ndarray | None
    width: int
    height: int
    faces: list[tuple[Detection, tuple[int, int, int, int], np.ndarray]]
    error: ImageError | None = None
    skip: bool = False


def default_workers() -> int:
    """Decode + detect threads: one per CPU core, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


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
        min_face: float | None = None,
        workers: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.backend, self.spec = backend, spec
        self.detector = make_detector(detector, yunet_model=yunet_model, min_face=min_face)
        self.whole_image = detector == "none"
        self.margin, self.batch_size, self.keep_crops = margin, batch_size, keep_crops
        self.workers = workers or default_workers()
        self.mean, self.std = spec.mean_std
        self.model_lock = threading.Lock()  # one model call at a time (classifier, attention hooks)

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
            out.append(self.classify_batch(x))
        return np.concatenate(out)

    def classify_batch(self, x: torch.Tensor) -> np.ndarray:
        """N x C probabilities of one preprocessed batch (N x 3 x S x S); thread-safe."""
        with self.model_lock:
            return self.backend(x)

    def prepare(
        self, image: ImageInput, color: ColorOrder = "rgb", *, keep_rgb: bool = False, item: Any = None
    ) -> Prepared:
        """Decode, detect and crop one input (no classification); thread-safe.

        An unreadable input is returned with its `error` rather than raised (streams go on).
        """
        try:
            rgb = to_rgb(image, color)
        except ImageError as e:
            return Prepared(item, None, 0, 0, [], error=e)
        faces = [(det, box, np.ascontiguousarray(c)) for det, box, c in self.detect(rgb)]  # copies: rgb may go
        h, w = rgb.shape[:2]
        return Prepared(item, rgb if keep_rgb else None, int(w), int(h), faces)

    def result(self, prepared: Prepared, probs: Sequence[np.ndarray]) -> ImageResult:
        """The ImageResult of a prepared input given its faces' probabilities (in order)."""
        records = [self._record(det, box, c, p) for (det, box, c), p in zip(prepared.faces, probs)]
        return ImageResult(records, prepared.width, prepared.height, None if records else NO_FACE_NOTE)

    def predict(self, image: ImageInput, color: ColorOrder = "rgb") -> ImageResult:
        """The faces of one image (path, PIL image, numpy array with `color` order, or tensor).

        An unreadable input raises ImageError (one line)."""
        p = self.prepare(image, color)
        if p.error is not None:
            raise p.error
        return self.result(p, list(self.classify([c for _, _, c in p.faces])))

    def predict_many(self, images: Sequence[ImageInput], color: ColorOrder = "rgb") -> list[ImageResult]:
        """One ImageResult per image; all their faces are classified in shared batches while
        `workers` threads decode and detect (an unreadable input raises ImageError)."""
        out = []
        for p, res in self.predict_stream(images, color):
            if p.error is not None:
                raise p.error
            out.append(res)
        return out

    def predict_stream(
        self,
        images: Iterable[ImageInput],
        color: ColorOrder = "rgb",
        *,
        keep_rgb: bool = False,
        stats: StreamStats | None = None,
        prepare: Callable[[Any], Prepared] | None = None,
    ) -> Iterator[tuple[Prepared, ImageResult | None]]:
        """(prepared, result) per input, in order, overlapped: `workers` threads decode and detect
        ahead while this thread classifies the faces of many inputs in full batches.

        Unreadable inputs come back with `prepared.error` set and result None (the stream goes on).
        `prepare` replaces the default per-item work (item -> Prepared), e.g. to pass video frames
        through without detection.
        """
        if prepare is None:

            def prepare(image: ImageInput) -> Prepared:
                return self.prepare(image, color, keep_rgb=keep_rgb, item=image)

        return stream(self, images, prepare, workers=self.workers, stats=stats)

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
