"""Draw predictions on an image: a box per face, its label and a panel of per-class probability bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ddakern.atomic import temp_path
from ddakern.inference.outputs import OutputError
from ddakern.inference.predictor import ImageResult

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212)]  # fmt: skip
"""RGB colour per class index (distinct, readable on photos)."""


def class_color(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color: tuple[int, int, int]) -> None:
    import cv2

    thick = max(1, int(round(scale * 2)))
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)


def _bars(img: np.ndarray, probs: dict[str, float], x: int, y: int, scale: float, names: tuple[str, ...]) -> None:
    """Probability bars in a translucent panel whose top-left corner is (x, y), clipped to the image."""
    import cv2

    line = int(22 * scale) + 4
    label_w = int(max(cv2.getTextSize(n, cv2.FONT_HERSHEY_SIMPLEX, scale * 0.6, 1)[0][0] for n in names)) + 8
    bar_w = int(110 * scale) + 20
    pct_w = int(cv2.getTextSize("100%", cv2.FONT_HERSHEY_SIMPLEX, scale * 0.55, 1)[0][0]) + 8
    w, h = label_w + bar_w + pct_w + 12, line * len(names) + 8
    x = int(np.clip(x, 0, max(0, img.shape[1] - w)))
    y = int(np.clip(y, 0, max(0, img.shape[0] - h)))
    roi = img[y : y + h, x : x + w]
    roi[:] = (roi * 0.35).astype(np.uint8)
    for i, name in enumerate(names):
        top = y + 4 + i * line
        p = float(probs[name])
        _text(img, name, (x + 4, top + int(line * 0.72)), scale * 0.6, (255, 255, 255))
        x0 = x + label_w
        cv2.rectangle(img, (x0, top + 3), (x0 + bar_w, top + line - 3), (90, 90, 90), -1)
        cv2.rectangle(img, (x0, top + 3), (x0 + int(bar_w * p), top + line - 3), class_color(i), -1)
        _text(img, f"{100 * p:.0f}%", (x0 + bar_w + 5, top + int(line * 0.72)), scale * 0.55, (255, 255, 255))


def annotate(rgb: np.ndarray, result: ImageResult, class_names: tuple[str, ...], bars: bool = True) -> np.ndarray:
    """A copy of the RGB image with each face's box, label (probability) and probability bars."""
    import cv2

    img = np.ascontiguousarray(rgb).copy()
    base = max(0.45, min(img.shape[:2]) / 700)
    for face in result.faces:
        x0, y0, x1, y1 = face.box
        k = class_names.index(face.label)
        color = class_color(k)
        scale = max(base, (y1 - y0) / 220)
        cv2.rectangle(img, (x0, y0), (x1, y1), color, max(2, int(round(scale * 3))), cv2.LINE_AA)
        label = f"{face.label} {100 * face.probabilities[face.label]:.0f}%"
        _text(img, label, (x0, max(int(24 * scale), y0 - int(8 * scale))), scale * 0.9, color)
        if bars:
            right = x1 + 6
            panel_w = int(220 * scale) + 70
            x = right if right + panel_w <= img.shape[1] else x0 - panel_w - 6
            _bars(img, face.probabilities, x, y0, scale, class_names)
    if not result.faces and result.note:
        _text(img, result.note, (8, int(30 * base)), base, (255, 255, 255))
    return img


def write_image(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB image atomically (temp file in the same folder, then rename); format from the suffix.
    Any failure is an OutputError naming `path` (OpenCV's imwrite only returns False)."""
    import cv2

    try:
        with temp_path(path, suffix=path.suffix) as tmp:  # cv2 picks the format from the suffix
            if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                raise OutputError(path, "OpenCV could not write this image")
    except (OSError, cv2.error) as e:
        raise e if isinstance(e, OutputError) else OutputError(path, e) from None
