"""The harder built-in faces: the same 7 expressions under head pose, light, occlusion and clutter.

The easy set (faces.draw_face) is solved at ~95% in 4 CPU epochs, so no comparison on it means much.
These faces keep its expression geometry and add what real in-the-wild sets have: in-plane
rotation and a yaw-like turn (the face narrowed and its features moved towards one side), background
clutter behind the head, bars and patches over it (hands, glasses, scarves), strong directional light
with a shadowed side, lower contrast and more sensor noise, and weaker expressions. The values were
chosen once, before any training on the set; label noise is added by the writer (synthetic.py).
"""

from __future__ import annotations

import math

import numpy as np

from .faces import GEOMETRY, _Canvas, _features, _head


def draw_hard_face(expression: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """One uint8 size x size x 3 hard face showing `expression` (drawn at 2x and downsampled); the draws
    from `rng` come in a fixed order (pose, clutter, head, features, occluders, light)."""
    g = GEOMETRY[expression]
    t = 0.0 if expression == "neutral" else rng.uniform(0.5, 1.0)
    big = 2 * size
    skin = rng.uniform([90, 60, 40], [250, 215, 195])
    yaw = rng.uniform(-0.5, 0.5)  # radians: the face narrows by cos(yaw), its features move by sin(yaw)
    canvas = _Canvas(
        big,
        tuple(int(v) for v in rng.uniform(0, 255, 3)),
        angle=math.radians(rng.uniform(-22, 22)),
        scale=rng.uniform(0.8, 1.05),
        shift=rng.uniform(-0.1, 0.1, 2),
        squeeze=math.cos(yaw),
    )
    _clutter(canvas, rng)
    _head(canvas, skin, rng)
    canvas.offset = canvas.offset + canvas.matrix @ np.array([0.22 * math.sin(yaw), 0.0])
    _features(canvas, g, t, skin, rng, (0.25, 0.55))
    _occlusion(canvas, rng)
    image = np.asarray(canvas.image.reduce(2), dtype=np.float32)
    return _light(image, rng)


def _clutter(canvas: _Canvas, rng: np.random.Generator) -> None:
    """2 to 6 random rectangles, ellipses and thick lines behind the head, in canvas pixels."""
    big = canvas.image.size[0]
    for _ in range(rng.integers(2, 7)):
        kind = rng.integers(3)
        color = tuple(int(v) for v in rng.uniform(0, 255, 3))
        x0, y0, x1, y1 = (rng.uniform(-0.1, 1.1, 4) * big).tolist()
        box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
        if kind == 0:
            canvas.draw.rectangle(box, fill=color)
        elif kind == 1:
            canvas.draw.ellipse(box, fill=color)
        else:
            canvas.draw.line([x0, y0, x1, y1], fill=color, width=int(rng.uniform(0.02, 0.08) * big))


def _occlusion(canvas: _Canvas, rng: np.random.Generator) -> None:
    """Three faces in ten get a bar across the eyes or the mouth (glasses, a scarf); then 0 to 2 patches
    (hands, objects) anywhere."""
    if rng.random() < 0.3:
        y = rng.choice([-0.12, 0.44]) + rng.uniform(-0.05, 0.05)
        half = rng.uniform(0.05, 0.1)
        bar = np.array([[-0.75, y - half], [0.75, y - half], [0.75, y + half], [-0.75, y + half]])
        canvas.polygon(bar, tuple(int(v) for v in rng.uniform(0, 255, 3)))
    big = canvas.image.size[0]
    for _ in range(rng.binomial(2, 0.25)):
        cx, cy = rng.uniform(0.15, 0.85, 2) * big
        w, h = rng.uniform(0.1, 0.25, 2) * big
        shape = canvas.draw.ellipse if rng.random() < 0.5 else canvas.draw.rectangle
        shape([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], fill=tuple(int(v) for v in rng.uniform(0, 255, 3)))


def _light(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Low contrast, a strong linear gradient, a shadowed side (a soft step across the face) and noise."""
    size = image.shape[0]
    mean = image.mean()
    image = (image - mean) * np.float32(rng.uniform(0.5, 1.1)) + np.float32(mean + rng.uniform(-45, 45))
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    a = rng.uniform(0, 2 * math.pi)
    image += np.float32(rng.uniform(15, 60)) * (math.cos(a) * ramp[None, :] + math.sin(a) * ramp[:, None])[..., None]
    b = rng.uniform(0, 2 * math.pi)
    side = math.cos(b) * ramp[None, :] + math.sin(b) * ramp[:, None]
    shadow = 1.0 - np.float32(rng.uniform(0.15, 0.5)) / (1.0 + np.exp(-8.0 * side))
    image = image * shadow[..., None]
    image += rng.uniform(3, 10) * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)
