"""Augmentation recipes and normalisation constants shared by the DALI and PyTorch pipelines."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import DataError


@dataclass(frozen=True)
class AugmentRecipe:
    """With probability `p_branch` branch 1 {flip with p_flip, rotate uniform +-degrees}, else branch 2
    {grayscale if `gray`, scale uniform in [1, max_scale] (zoom in, centre crop back)}."""

    name: str
    p_branch: float
    p_flip: float
    degrees: float
    gray: bool
    max_scale: float


RECIPES: dict[str, AugmentRecipe] = {
    "fer2013": AugmentRecipe("fer2013", 0.5, 0.6, 30.0, False, 1.1),
    "rafdb": AugmentRecipe("rafdb", 0.5, 0.5, 25.0, True, 1.05),
}
# ImageNet mean / std on the [0, 1] scale.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ITU-R BT.601 luma, used for the grayscale branch by both pipelines (DALI's hsv saturation=0 matches).
LUMA = (0.299, 0.587, 0.114)


def get_recipe(augment: str | None) -> AugmentRecipe | None:
    """The named recipe, or None for no augmentation."""
    if augment is None or augment == "none":
        return None
    if augment not in RECIPES:
        raise DataError(f"unknown augment {augment!r}; expected one of {', '.join(RECIPES)} or None")
    return RECIPES[augment]


def norm_constants(normalize: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) on the 0..255 scale: `unit` maps to [0, 1], `imagenet` to ImageNet mean/std."""
    if normalize == "unit":
        return (0.0, 0.0, 0.0), (255.0, 255.0, 255.0)
    if normalize == "imagenet":
        return tuple(255.0 * m for m in IMAGENET_MEAN), tuple(255.0 * s for s in IMAGENET_STD)
    raise DataError(f"unknown normalize {normalize!r}; expected 'unit' or 'imagenet'")
