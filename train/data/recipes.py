"""Augmentation recipes and normalisation constants shared by the DALI and PyTorch pipelines."""

from __future__ import annotations

from dataclasses import dataclass

from ddakern.normalization import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401 - re-exported
from ddakern.normalization import norm_constants as _norm_constants

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
    """ddakern.normalization.norm_constants (the one definition inference uses too), raising DataError."""
    try:
        return _norm_constants(normalize)
    except ValueError as e:
        raise DataError(str(e)) from None
