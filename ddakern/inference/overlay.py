"""Render attention maps as panels blended over the face crop, one PNG per face (matplotlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ddakern.atomic import temp_path
from ddakern.inference.attention import attention_maps
from ddakern.inference.images import preprocess
from ddakern.inference.outputs import OutputError
from ddakern.inference.predictor import FaceRecord, ImageResult, Predictor

CROP_PX = 224


def blend(crop: np.ndarray, heat: np.ndarray, cmap: str = "inferno", alpha: float = 0.55) -> np.ndarray:
    """The map resized (bicubic) to the crop, scaled to 0..1, coloured and blended over the crop."""
    import cv2
    from matplotlib import colormaps

    face = cv2.resize(crop, (CROP_PX, CROP_PX), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    h = cv2.resize(heat.astype(np.float32), (CROP_PX, CROP_PX), interpolation=cv2.INTER_CUBIC)
    lo, hi = float(h.min()), float(h.max())
    h = (h - lo) / (hi - lo) if hi > lo else np.zeros_like(h)
    colour = colormaps[cmap](np.clip(h, 0, 1))[..., :3]
    return ((1 - alpha) * face + alpha * colour).clip(0, 1)


def render(face: FaceRecord, crop: np.ndarray, maps: list[tuple[str, np.ndarray]], names: tuple[str, ...]):
    """A one-row figure: the face with its label, one blended panel per map, and the probability bars."""
    import matplotlib

    matplotlib.use("Agg")
    import cv2
    import matplotlib.pyplot as plt

    n = len(maps) + 2
    fig, axes = plt.subplots(1, n, figsize=(2.5 * n, 3.0), gridspec_kw={"width_ratios": [1] * (n - 1) + [1.1]})
    fig.patch.set_facecolor("#111418")
    axes[0].imshow(cv2.resize(crop, (CROP_PX, CROP_PX), interpolation=cv2.INTER_AREA))
    axes[0].set_title(f"{face.label} {100 * face.probabilities[face.label]:.0f}%", color="white", fontsize=11)
    for ax, (title, heat) in zip(axes[1:-1], maps):
        ax.imshow(blend(crop, heat))
        ax.set_title(title.replace(" (", "\n("), color="white", fontsize=9)
    for ax in axes[:-1]:
        ax.axis("off")
    _bars(axes[-1], face, names)
    fig.tight_layout(pad=0.6)
    return fig


def _bars(ax, face: FaceRecord, names: tuple[str, ...]) -> None:
    p = [face.probabilities[c] for c in names]
    colours = ["#f5a623" if c == face.label else "#5b8def" for c in names]
    ax.barh(range(len(names)), p, color=colours)
    ax.set_yticks(range(len(names)), names, color="white", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_facecolor("#111418")
    ax.tick_params(axis="x", colors="white", labelsize=7)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title("probabilities", color="white", fontsize=9)


def save_figure(fig, path: Path) -> None:
    """savefig to a temporary file in the same folder, then rename (atomic); failures are OutputErrors."""
    import matplotlib.pyplot as plt

    try:
        with temp_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, facecolor=fig.get_facecolor())
    except OSError as e:
        raise e if isinstance(e, OutputError) else OutputError(path, e) from None
    finally:
        plt.close(fig)


class AttentionWriter:
    """predict's per-result callback: OUT/attention/<stem>[_frame<k>]_face<i>.png for every face, the
    stem the input's unique output stem (`stems`, see outputs.output_stems; else its file stem)."""

    def __init__(
        self, model, pred: Predictor, folder: Path, summary: str = "focus", stems: dict[str, str] | None = None
    ) -> None:
        self.model, self.pred, self.folder, self.summary = model, pred, folder, summary
        self.stems = stems or {}

    def __call__(self, name: str, frame: int | None, rgb: np.ndarray, result: ImageResult) -> None:
        device = next(self.model.parameters()).device
        stem = self.stems.get(name) or Path(name).stem
        stem += "" if frame is None else f"_frame{frame:06d}"
        for i, face in enumerate(result.faces):
            crop = face.crop
            x = preprocess([crop], self.pred.spec.image_size, self.pred.mean, self.pred.std).to(device)
            maps = attention_maps(self.model, x, self.summary)
            save_figure(render(face, crop, maps, self.pred.class_names), self.folder / f"{stem}_face{i}.png")
