"""Input normalisation constants, one definition for the training pipelines and for inference.

A checkpoint stores the name (`unit` or `imagenet`); both sides turn it into (mean, std) here, so a
model is never fed differently at inference than it was trained.
"""

from __future__ import annotations

NORMALIZATIONS = ("unit", "imagenet")
# ImageNet mean / std on the [0, 1] scale.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def norm_constants(normalize: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) on the 0..255 scale: `unit` maps to [0, 1], `imagenet` to ImageNet mean/std.

    Raises ValueError (one line) for any other name; callers re-raise it as their own error type.
    """
    if normalize == "unit":
        return (0.0, 0.0, 0.0), (255.0, 255.0, 255.0)
    if normalize == "imagenet":
        return tuple(255.0 * m for m in IMAGENET_MEAN), tuple(255.0 * s for s in IMAGENET_STD)
    raise ValueError(f"unknown normalize {normalize!r}; expected 'unit' or 'imagenet'")


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "NORMALIZATIONS", "norm_constants"]
