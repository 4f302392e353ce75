"""Inference on photos, folders, videos and webcams: `Predictor`, face detectors, DDA attention overlays,
export. Everything reads `train.run` / `train.fuse` checkpoints without importing `train`."""

from ddakern.inference.checkpoint import CheckpointError, ModelSpec, load_model, read_checkpoint
from ddakern.inference.detect import Detection, HaarDetector, WholeImage, YuNetDetector, make_detector
from ddakern.inference.images import ImageError, to_rgb
from ddakern.inference.predictor import NO_FACE_NOTE, FaceRecord, ImageResult, Predictor, Prepared
from ddakern.inference.prefetch import StreamStats

__all__ = [
    "NO_FACE_NOTE",
    "CheckpointError",
    "Detection",
    "FaceRecord",
    "HaarDetector",
    "ImageError",
    "ImageResult",
    "ModelSpec",
    "Predictor",
    "Prepared",
    "StreamStats",
    "WholeImage",
    "YuNetDetector",
    "load_model",
    "make_detector",
    "read_checkpoint",
    "to_rgb",
]
