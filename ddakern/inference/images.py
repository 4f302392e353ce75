"""Inputs to RGB uint8 arrays: paths, PIL images, numpy arrays (RGB or BGR, stated) and tensors.

And the model's preprocessing, as the training pipelines do it (bilinear resize with half-pixel
centres, no antialiasing, then (x - mean) / std on the 0..255 scale), so predictions on the test
images reproduce the training run's test accuracy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

ColorOrder = Literal["rgb", "bgr"]
ImageInput = Any  # str | os.PathLike | PIL.Image.Image | np.ndarray | torch.Tensor


class ImageError(ValueError):
    """An input that is not a readable image; the message is one line naming it."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as RGB uint8 H x W x 3 (fully decoded: a truncated JPEG is an error)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{path}: not a readable image ({e})") from None


def to_rgb(image: ImageInput, color: ColorOrder = "rgb") -> np.ndarray:
    """Any supported input as a contiguous RGB uint8 H x W x 3 array.

    numpy arrays: H x W (gray), H x W x 3 or H x W x 4, uint8 (0..255) or float (0..1), channel
    order given by `color` ("rgb", or "bgr" for OpenCV frames). Tensors: 3 x H x W or H x W x 3
    (or 1 x ...), uint8 or float 0..1, RGB (or `color`). Paths and PIL images are always RGB.
    """
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dim() == 3 and t.shape[0] in (1, 3, 4) and t.shape[-1] not in (1, 3, 4):
            t = t.permute(1, 2, 0)
        image = t.numpy()
    if not isinstance(image, np.ndarray):
        raise ImageError(f"unsupported input type {type(image).__name__} (path, PIL image, numpy array or tensor)")
    return _array_to_rgb(image, color)


def _array_to_rgb(a: np.ndarray, color: ColorOrder) -> np.ndarray:
    if color not in ("rgb", "bgr"):
        raise ImageError(f"color must be 'rgb' or 'bgr', got {color!r}")
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ImageError(f"expected an H x W, H x W x 3 or H x W x 4 image array, got shape {a.shape}")
    a = a[..., :3]
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating):
            raise ImageError(f"image arrays must be uint8 (0..255) or float (0..1), got {a.dtype}")
        a = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if color == "bgr":
        a = a[..., ::-1]
    return np.ascontiguousarray(a)


def preprocess(
    faces: list[np.ndarray], image_size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """RGB uint8 crops -> float32 N x 3 x S x S, exactly the training pipelines' test transform."""
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    out = []
    for face in faces:
        x = torch.from_numpy(np.ascontiguousarray(face)).to(torch.float32).permute(2, 0, 1)
        x = F.interpolate(x[None], size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=False)
        out.append((x[0] - m) / s)
    return torch.stack(out) if out else torch.empty(0, 3, image_size, image_size)
