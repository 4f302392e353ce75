"""Temporal smoothing of video predictions: an exponential moving average of each face's
probabilities, faces matched between processed frames by box overlap (IoU)."""

from __future__ import annotations

import numpy as np

from ddakern.inference.predictor import FaceRecord


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class Smoother:
    """p_t = weight * p_(t-1) + (1 - weight) * p_now for a face that overlaps (IoU >= min_iou) one of
    the previous processed frame's faces; a new face starts from its own probabilities."""

    def __init__(self, weight: float, min_iou: float = 0.3) -> None:
        if not 0.0 <= weight < 1.0:
            raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
        self.weight, self.min_iou = weight, min_iou
        self.tracks: list[tuple[tuple[int, int, int, int], np.ndarray]] = []

    def prime(self, faces: list[FaceRecord]) -> None:
        """Take already smoothed faces (a resumed video's last recorded frame) as the previous frame."""
        self.tracks = [(f.box, np.array(list(f.probabilities.values()))) for f in faces]

    def __call__(self, faces: list[FaceRecord]) -> list[FaceRecord]:
        """Smooth `faces` in place (probabilities and label) and remember them for the next frame."""
        used: set[int] = set()
        tracks = []
        for face in faces:
            names = list(face.probabilities)
            p = np.array([face.probabilities[n] for n in names])
            scores = [(iou(face.box, box), j) for j, (box, _) in enumerate(self.tracks) if j not in used]
            best = max(scores, default=(0.0, -1))
            if best[0] >= self.min_iou:
                used.add(best[1])
                p = self.weight * self.tracks[best[1]][1] + (1.0 - self.weight) * p
                face.probabilities = {n: float(v) for n, v in zip(names, p)}
                face.label = names[int(np.argmax(p))]
            tracks.append((face.box, p))
        self.tracks = tracks
        return faces
