"""Procedural facial-expression images: 7 expressions drawn from brow, eye and mouth geometry.

Each face has its own proportions and colours; the expression moves the features by an intensity in
[0.6, 1]; pose (rotation, scale, shift), lighting (brightness, contrast, gradient), noise and random
occluding patches make the task learnable but not trivial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

EXPRESSIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


@dataclass(frozen=True)
class Geometry:
    """Offsets from the neutral face, in face units (face half-height ~ 0.8; y grows downwards)."""

    brow_inner: float = 0.0  # vertical move of the inner brow ends (negative: raised)
    brow_outer: float = 0.0
    eye_open: float = 1.0  # eye height factor
    mouth_width: float = 0.0
    mouth_curve: float = 0.0  # corner lift (positive: corners up, a smile)
    mouth_open: float = 0.0  # lip gap
    mouth_round: bool = False  # an O-shaped open mouth
    lip_raise: float = 0.0  # one-sided upper-lip raise (disgust)
    wrinkle: bool = False  # nose wrinkles (disgust)


GEOMETRY: dict[str, Geometry] = {
    "neutral": Geometry(),
    "happy": Geometry(eye_open=0.75, mouth_width=0.12, mouth_curve=0.16, mouth_open=0.06),
    "sad": Geometry(brow_inner=-0.12, brow_outer=0.05, eye_open=0.85, mouth_width=-0.04, mouth_curve=-0.13),
    "surprise": Geometry(
        brow_inner=-0.13, brow_outer=-0.13, eye_open=1.7, mouth_width=-0.14, mouth_open=0.28, mouth_round=True
    ),
    "angry": Geometry(brow_inner=0.1, brow_outer=-0.04, eye_open=0.5, mouth_width=-0.08, mouth_curve=-0.02),
    "fear": Geometry(
        brow_inner=-0.12, brow_outer=-0.07, eye_open=1.6, mouth_width=0.16, mouth_curve=-0.03, mouth_open=0.09
    ),
    "disgust": Geometry(
        brow_inner=0.06, brow_outer=0.04, eye_open=0.65, mouth_curve=-0.03, lip_raise=0.12, wrinkle=True
    ),
}


def _lerp(neutral: float, target: float, t: float) -> float:
    return neutral + (target - neutral) * t


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 20) -> np.ndarray:
    a = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], axis=1)


class _Canvas:
    """Draws polygons given in face units through a random similarity transform (the pose)."""

    def __init__(
        self,
        size: int,
        background: tuple[int, ...],
        angle: float,
        scale: float,
        shift: np.ndarray,
        squeeze: float = 1.0,
    ):
        self.image = Image.new("RGB", (size, size), background)
        self.draw = ImageDraw.Draw(self.image)
        c, s = math.cos(angle), math.sin(angle)
        # squeeze < 1 narrows the face before rotating it: a head turned away (yaw), seen in projection
        self.matrix = np.array([[c, -s], [s, c]]) @ np.diag([squeeze, 1.0]) * scale * size / 2.0
        self.offset = (np.array([0.5, 0.5]) + shift) * size
        self.unit = scale * size / 2.0

    def _pts(self, pts: np.ndarray) -> list[float]:
        return (pts @ self.matrix.T + self.offset).ravel().tolist()

    def polygon(self, pts: np.ndarray, fill: tuple[int, ...]) -> None:
        self.draw.polygon(self._pts(pts), fill=fill)

    def line(self, pts: np.ndarray, fill: tuple[int, ...], width: float) -> None:
        self.draw.line(self._pts(pts), fill=fill, width=max(1, round(width * self.unit)), joint="curve")


def _shade(color: np.ndarray, factor: float) -> tuple[int, ...]:
    return tuple(int(v) for v in np.clip(color * factor, 0, 255))


def draw_face(expression: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """One uint8 size x size x 3 face showing `expression` (drawn at 2x and downsampled).

    The parts draw from `rng` in a fixed order (pose, head, eyes, nose, mouth, patches, lighting):
    the built-in synthetic set depends on it, so keep it when changing a part.
    """
    g = GEOMETRY[expression]
    t = 0.0 if expression == "neutral" else rng.uniform(0.6, 1.0)
    canvas, skin = _posed_canvas(rng, 2 * size)
    _head(canvas, skin, rng)
    _features(canvas, g, t, skin, rng, (0.2, 0.45))
    _occluders(canvas, rng)
    image = np.asarray(canvas.image.reduce(2), dtype=np.float32)
    return _lighting(image, rng)


def _posed_canvas(rng: np.random.Generator, big: int) -> tuple[_Canvas, np.ndarray]:
    """A canvas with a random background and pose, and the face's skin colour."""
    skin = rng.uniform([120, 80, 60], [250, 210, 190])
    background = tuple(int(v) for v in rng.uniform(0, 255, 3))
    canvas = _Canvas(
        big,
        background,
        angle=math.radians(rng.uniform(-12, 12)),
        scale=rng.uniform(0.88, 1.05),
        shift=rng.uniform(-0.07, 0.07, 2),
    )
    return canvas, skin


def _head(canvas: _Canvas, skin: np.ndarray, rng: np.random.Generator) -> None:
    """The head ellipse and, seven times in ten, a cap of hair."""
    canvas.polygon(_ellipse(0, 0.05, rng.uniform(0.56, 0.68), rng.uniform(0.74, 0.86), 32), _shade(skin, 1.0))
    if rng.random() < 0.7:
        hair = rng.uniform(10, 120, 3)
        top = _ellipse(0, -0.55, rng.uniform(0.5, 0.66), rng.uniform(0.2, 0.32), 24)
        canvas.polygon(top[top[:, 1] <= -0.48], tuple(int(v) for v in hair))


def _features(canvas: _Canvas, g, t: float, skin, rng: np.random.Generator, shade: tuple[float, float]) -> None:
    """Eyes with brows, nose and mouth of expression geometry `g` at intensity `t`, in a shade of the skin
    darker by a fraction drawn from `shade` (the easy and the hard faces draw them alike)."""
    feature = _shade(skin, rng.uniform(*shade))
    ey = _eyes_and_brows(canvas, g, t, feature, rng)
    _nose(canvas, g, t, skin, ey, rng)
    _mouth(canvas, g, t, skin, feature, rng)


def _eyes_and_brows(
    canvas: _Canvas, g: Geometry, t: float, feature: tuple[int, ...], rng: np.random.Generator
) -> float:
    """Both eyes (opened by the expression) and brows (inner/outer ends moved); returns the eye line y."""
    ex, ey = rng.uniform(0.21, 0.28), rng.uniform(-0.16, -0.08)
    eye_rx = rng.uniform(0.1, 0.13)
    eye_ry = rng.uniform(0.05, 0.065) * _lerp(1.0, g.eye_open, t)
    brow_y = ey - rng.uniform(0.12, 0.16)
    brow_w = rng.uniform(0.035, 0.055)
    for side in (-1.0, 1.0):
        canvas.polygon(_ellipse(side * ex, ey, eye_rx, eye_ry), (235, 235, 235))
        canvas.polygon(_ellipse(side * ex, ey, min(0.04, eye_ry), min(0.04, eye_ry), 12), feature)
        inner = np.array([side * (ex - eye_rx * 0.9), brow_y + _lerp(0.0, g.brow_inner, t)])
        outer = np.array([side * (ex + eye_rx * 1.1), brow_y + _lerp(0.0, g.brow_outer, t)])
        canvas.line(np.stack([inner, outer]), feature, brow_w)
    return ey


def _nose(canvas: _Canvas, g: Geometry, t: float, skin: np.ndarray, ey: float, rng: np.random.Generator) -> None:
    """The nose line from the eye line down, with wrinkles for disgust."""
    ny = rng.uniform(0.12, 0.2)
    canvas.line(np.array([[0.0, ey + 0.05], [-0.04, ny], [0.04, ny]]), _shade(skin, 0.7), 0.02)
    if g.wrinkle and t > 0:
        for side in (-1.0, 1.0):
            canvas.line(np.array([[side * 0.05, ny - 0.12], [side * 0.1, ny - 0.04]]), _shade(skin, 0.6), 0.018)


def _mouth(
    canvas: _Canvas, g: Geometry, t: float, skin: np.ndarray, feature: tuple[int, ...], rng: np.random.Generator
) -> None:
    """The mouth: an O for a round expression, else two lips curved, opened and raised by it."""
    my = rng.uniform(0.4, 0.48)
    half = rng.uniform(0.16, 0.2) + _lerp(0.0, g.mouth_width, t) / 2.0
    lip = _shade(skin, rng.uniform(0.4, 0.6)) if rng.random() < 0.5 else feature
    if g.mouth_round:
        h = _lerp(0.0, g.mouth_open, t)
        canvas.polygon(_ellipse(0.0, my, max(half, 0.06), max(h, 0.03) / 2 + 0.02), (40, 20, 20))
    else:
        _lips(canvas, g, t, my, half, lip)


def _lips(canvas: _Canvas, g: Geometry, t: float, my: float, half: float, lip: tuple[int, ...]) -> None:
    """Upper and lower lip lines (no random draws), the gap between them filled when open or raised."""
    x = np.linspace(-half, half, 15)
    u = (x / half) ** 2
    centre = my - _lerp(0.0, g.mouth_curve, t) * u
    gap = _lerp(0.0, g.mouth_open, t) * (1.0 - u) / 2.0
    raise_ = _lerp(0.0, g.lip_raise, t) * np.clip(x / half, 0, 1) * (1.0 - u) * 2.0
    upper = np.stack([x, centre - gap - raise_], axis=1)
    lower = np.stack([x, centre + gap], axis=1)
    if gap.max() > 0.004 or raise_.max() > 0.004:
        canvas.polygon(np.concatenate([upper, lower[::-1]]), (50, 25, 25) if g.mouth_open else lip)
    canvas.line(upper, lip, 0.035)
    canvas.line(lower, lip, 0.035)


def _occluders(canvas: _Canvas, rng: np.random.Generator) -> None:
    """Zero to two random rectangles over the face (hands, objects), in canvas pixels."""
    big = canvas.image.size[0]
    for _ in range(rng.binomial(2, 0.12)):
        cx, cy = rng.uniform(0.1, 0.9, 2) * big
        w, h = rng.uniform(0.12, 0.35, 2) * big
        canvas.draw.rectangle(
            [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2],
            fill=tuple(int(v) for v in rng.uniform(0, 255, 3)),
        )


def _lighting(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Contrast, brightness, a linear gradient and Gaussian noise; uint8 result."""
    size = image.shape[0]
    mean = image.mean()
    image = (image - mean) * np.float32(rng.uniform(0.55, 1.25)) + np.float32(mean + rng.uniform(-35, 35))
    a = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    gradient = math.cos(a) * ramp[None, :] + math.sin(a) * ramp[:, None]
    image += np.float32(rng.uniform(0, 45)) * gradient[..., None]
    image += rng.uniform(2, 9) * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)
