"""Inputs to RGB uint8 arrays: paths, PIL images, numpy arrays (RGB or BGR, stated) and tensors.

Decoding rules (so that no input is silently wrong):
- Files and PIL images: EXIF orientation applied (a phone photo stored rotated is turned upright);
  16-bit samples (PIL modes I;16*, and I when its values fit 16 bits) scaled to 8 bits by /257
  (rounded), never clipped; 32-bit float images (mode F) read as 0..1 when they lie in [0, 1], else
  as 0..255 when they lie there, else refused; transparency (RGBA, LA, PA, P with a transparent
  colour) composited over white, as a viewer shows it; CMYK, YCbCr, LAB, HSV, 1, L, P converted
  by PIL.
- numpy arrays and tensors: uint8 as is; uint16 scaled by /257 like 16-bit files; float must lie
  in [0, 1] (0..255 floats are refused with one line saying to divide by 255 or pass uint8, never
  clipped); H x W x 4 arrays drop their 4th channel (OpenCV's BGRA / RGBX frames).

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
from PIL import Image, ImageOps, UnidentifiedImageError

ColorOrder = Literal["rgb", "bgr"]
ImageInput = Any  # str | os.PathLike | PIL.Image.Image | np.ndarray | torch.Tensor
ORIENTATION = 0x0112  # the EXIF Orientation tag
FLOAT_SLACK = 1.0 / 510.0  # half an 8-bit level: floats this far outside [0, 1] round to 0 or 255 anyway


class ImageError(ValueError):
    """An input that is not a readable image; the message is one line naming it."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as RGB uint8 H x W x 3 (fully decoded: a truncated JPEG is an error; the rules
    of the module docstring: EXIF orientation, 16-bit and float samples, transparency)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.format == "JPEG" and im.mode in ("RGB", "L") and _orientation(im) == 1:
                fast = _decode_jpeg(path)
                if fast is not None:
                    return fast
            im.load()
            return pil_to_rgb(im, str(path))
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{path}: not a readable image ({e})") from None


def _decode_jpeg(path: Path) -> np.ndarray | None:
    """An upright RGB or gray baseline JPEG decoded by libjpeg-turbo through simplejpeg: the same pixels
    as PIL (both libjpeg-turbo, accurate DCT, fancy upsampling; pinned by a test) in about 0.4x the time,
    which matters to `predict` on photo folders. Strict: corrupt data raises. None without simplejpeg."""
    try:
        import simplejpeg
    except ImportError:
        return None
    try:
        return simplejpeg.decode_jpeg(path.read_bytes(), colorspace="RGB", strict=True)
    except ValueError as e:
        raise ImageError(f"{path}: not a readable image ({e})") from None


def _orientation(im: Image.Image) -> int:
    """The EXIF Orientation tag (1 = upright; also 1 without one, or if EXIF is unreadable)."""
    try:
        return int(im.getexif().get(ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make a readable image unreadable
        return 1


def upright(im: Image.Image) -> Image.Image:
    """The image turned as its EXIF Orientation tag says (unchanged without one, or if EXIF is unreadable)."""
    if _orientation(im) == 1:
        return im
    try:
        return ImageOps.exif_transpose(im) or im
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make a readable image unreadable
        return im


def pil_to_rgb(im: Image.Image, name: str = "image") -> np.ndarray:
    """A PIL image of any mode as RGB uint8 H x W x 3, upright (see the module docstring)."""
    im = upright(im)
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im)
        if mode == "F":
            gray = _float_file_to_uint8(a, name)
        else:
            lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
            if lo < 0 or hi > 65535:
                raise ImageError(
                    f"{name}: 32-bit integer image with values {lo}..{hi} (8 or 16 bit expected): convert it first"
                )
            gray = _scale16(a)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=-1))
    if mode == "P" and "transparency" in im.info:
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


def _scale16(a: np.ndarray) -> np.ndarray:
    """0..65535 samples -> 0..255 (x / 257, rounded: 65535 -> 255, 257 -> 1)."""
    return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _float_file_to_uint8(a: np.ndarray, name: str) -> np.ndarray:
    lo, hi = (float(np.min(a)), float(np.max(a))) if a.size else (0.0, 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 255.0:
        raise ImageError(f"{name}: float image with values {lo:g}..{hi:g} (0..1 or 0..255 expected)")
    scale = 255.0 if hi <= 1.0 else 1.0
    return (a * scale + 0.5).astype(np.uint8)


def to_rgb(image: ImageInput, color: ColorOrder = "rgb") -> np.ndarray:
    """Any supported input as a contiguous RGB uint8 H x W x 3 array.

    numpy arrays: H x W (gray), H x W x 3 or H x W x 4, uint8 (0..255), uint16 (0..65535, /257) or
    float in [0, 1] (anything else is refused, never clipped), channel order given by `color`
    ("rgb", or "bgr" for OpenCV frames). Tensors: 3 x H x W or H x W x 3 (or 1 x ...), same dtypes,
    RGB (or `color`). Paths and PIL images are RGB, turned upright by their EXIF orientation.
    """
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
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
    if a.dtype == np.uint16:
        a = _scale16(a)
    elif np.issubdtype(a.dtype, np.floating):
        lo, hi = (float(np.min(a)), float(np.max(a))) if a.size else (0.0, 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -FLOAT_SLACK or hi > 1.0 + FLOAT_SLACK:
            raise ImageError(
                f"float image values must lie in [0, 1], these span {lo:g}..{hi:g}: "
                "divide 0..255 data by 255 (or pass uint8)"
            )
        a = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)  # the clip moves values by < half a level
    elif a.dtype != np.uint8:
        raise ImageError(f"image arrays must be uint8 (0..255), uint16 (0..65535) or float (0..1), got {a.dtype}")
    if color == "bgr":
        a = a[..., ::-1]
    return np.ascontiguousarray(a)


def preprocess_one(face: np.ndarray, image_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """One RGB uint8 crop -> float32 3 x S x S, exactly the training pipelines' test transform."""
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    x = torch.from_numpy(np.ascontiguousarray(face)).to(torch.float32).permute(2, 0, 1)
    x = F.interpolate(x[None], size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=False)
    return (x[0] - m) / s


def preprocess(
    faces: list[np.ndarray], image_size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """RGB uint8 crops -> float32 N x 3 x S x S, exactly the training pipelines' test transform."""
    out = [preprocess_one(face, image_size, mean, std) for face in faces]
    return torch.stack(out) if out else torch.empty(0, 3, image_size, image_size)
