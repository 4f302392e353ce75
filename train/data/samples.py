"""SampleSet, the in-memory description of one split, and the per-dataset label maps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# FER2013 label order (the CSV's `emotion` column).
FER2013_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# FERPlus vote columns, in file order; the first 8 are the classes.
FERPLUS_COLUMNS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
    "unknown",
    "NF",
)
FERPLUS_CLASSES: tuple[str, ...] = FERPLUS_COLUMNS[:8]
# RAF-DB basic label order (file labels 1..7 minus one).
RAFDB_CLASSES: tuple[str, ...] = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")


@dataclass
class SampleSet:
    """One split: either decoded arrays (`kind="array"`) or JPEG files (`kind="files"`), with int64 labels.

    images: uint8 N x H x W (gray) or N x H x W x 3 (RGB) when kind == "array".
    files: image paths (str or Path, as the reader made them) when kind == "files".
    skipped: how many malformed samples were skipped while loading (skip_bad=True).
    source: the label file the split was read from (informational).
    boxes: optional int64 N x 4 face boxes (x, y, width, height) in image pixels, cropped by the loaders
    (AffectNet's official release gives one per image); None means the whole image.
    """

    kind: str
    images: np.ndarray | None
    files: list[str | Path] | None
    labels: np.ndarray
    class_names: tuple[str, ...]
    skipped: int = 0
    source: Path | None = None
    boxes: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("array", "files"):
            raise ValueError(f"SampleSet.kind must be 'array' or 'files', got {self.kind!r}")
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        n = len(self)
        if self.kind == "array":
            if self.images is None or self.images.dtype != np.uint8 or self.images.ndim not in (3, 4):
                raise ValueError("SampleSet(kind='array') needs uint8 images N x H x W or N x H x W x 3")
            if self.images.ndim == 4 and self.images.shape[3] != 3:
                raise ValueError(f"SampleSet images must have 3 channels, got shape {self.images.shape}")
            if self.images.shape[0] != n:
                raise ValueError(f"SampleSet has {self.images.shape[0]} images but {n} labels")
        else:
            if self.files is None or len(self.files) != n:
                raise ValueError("SampleSet(kind='files') needs one file per label")
            self.files = list(self.files)  # str or Path as given: 1M Path() calls cost seconds
        if self.boxes is not None:
            self.boxes = np.asarray(self.boxes, dtype=np.int64).reshape(-1, 4)
            if self.boxes.shape[0] != n:
                raise ValueError(f"SampleSet has {self.boxes.shape[0]} face boxes but {n} labels")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, index: np.ndarray) -> SampleSet:
        """The samples at `index` (in that order), same class names, skipped count 0."""
        index = np.asarray(index, dtype=np.int64)
        return SampleSet(
            kind=self.kind,
            images=None if self.images is None else self.images[index],
            files=None if self.files is None else [self.files[i] for i in index],
            labels=self.labels[index],
            class_names=self.class_names,
            skipped=0,
            source=self.source,
            boxes=None if self.boxes is None else self.boxes[index],
        )
