"""Shared by the predict/export tests: a small real checkpoint in train.run's format, real photos."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ddakern.models import create

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def write_checkpoint(
    path: Path,
    *,
    model_name: str = "resnet18_dda",
    dda_stages: tuple[int, ...] = (4,),
    image_size: int = 64,
    normalize: str = "unit",
    width: int = 64,
) -> Path:
    """A checkpoint with the keys train.run writes (incl. numpy's RNG state), random weights."""
    opts = {"width": width, "spatial_width": width} if model_name.endswith("_dda") else {}
    model = create(model_name, num_classes=len(CLASSES), dda_stages=dda_stages, **opts).eval()
    with torch.no_grad():  # non-trivial running stats so eval-mode BN is not the identity
        model.train()
        model(torch.rand(4, 3, image_size, image_size) * 2)
        model.eval()
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    ckpt = {
        "format": 1,
        "model": model.state_dict(),
        "epoch": 1,
        "history": [{"epoch": 1, "val_acc": np.float64(50.0)}],
        "rng": [rng],
        "config": {"model": model_name, "dda_stages": list(dda_stages)},
        "model_name": model_name,
        "num_classes": len(CLASSES),
        "class_names": list(CLASSES),
        "dda_stages": list(dda_stages),
        "dda_options": opts,
        "dropout": 0.4,
        "image_size": image_size,
        "normalize": normalize,
        "recipe": "synthetic",
    }
    torch.save(ckpt, path)
    return path


def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def coffee() -> np.ndarray:
    from skimage import data

    return data.coffee()


def corrupt_jpeg(path: Path, rgb: np.ndarray) -> Path:
    """A JPEG whose entropy-coded data (after the start-of-scan marker) is overwritten with noise."""
    Image.fromarray(rgb).save(path, quality=90)
    b = bytearray(path.read_bytes())
    sos = b.find(b"\xff\xda")
    noise = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    b[sos + 200 : sos + 2200] = noise
    path.write_bytes(bytes(b))
    return path


def write_video(path: Path, n: int = 12) -> None:
    """Frames of a real photo: a 320 x 320 window moving over it, so the face shifts left and up."""
    import cv2

    photo = cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 320))
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.ascontiguousarray(photo[20 + 2 * i : 340 + 2 * i, 40 + 3 * i : 360 + 3 * i]))
    writer.release()
