"""build_loader / build_tta_loader: pick the DALI or PyTorch backend for a SampleSet."""

from __future__ import annotations

import logging
from typing import Any

import torch

from .errors import DataError
from .loader_spec import LoaderSpec
from .recipes import get_recipe, norm_constants
from .samples import SampleSet
from .torch_pipelines import TorchLoader

log = logging.getLogger("train.data")


def dali_available() -> bool:
    """True when nvidia.dali imports (imported only here, on demand, never at package import)."""
    try:
        import nvidia.dali  # noqa: F401
    except Exception:  # not installed, or installed without its native libraries
        return False
    return True


def _backend(loader: str):
    if loader == "torch":
        return TorchLoader
    if loader != "dali":
        raise DataError(f"unknown loader {loader!r}; expected 'dali' or 'torch'")
    if not dali_available():
        log.warning("loader 'dali' requested but nvidia-dali is not installed; using the PyTorch loader")
        return TorchLoader
    from .dali_loader import DaliLoader

    return DaliLoader


def build_loader(
    samples: SampleSet,
    *,
    train: bool,
    batch_size: int,
    image_size: int,
    augment: str | None,
    normalize: str = "unit",
    loader: str = "dali",
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    seed: int = 113,
    num_threads: int = 2,
    drop_last: bool | None = None,
    views: int = 0,
    balanced: bool = False,
    skip_bad: bool = False,
):
    """Re-iterable loader of (images float32 N x 3 x S x S, labels int64 N) on `device`.

    `len()` is the number of batches per epoch on this rank, `set_epoch(e)` selects the epoch.
    drop_last defaults to `train`. Training shards give every rank the same number of samples;
    evaluation shards are disjoint and together cover the set. `num_threads`: DALI CPU threads, or
    PyTorch worker processes (<= 1: in-process). `views` > 0: see build_tta_loader. `skip_bad`: a bad file
    is skipped and counted in the loader's `skips` (train.data.skips) instead of raising DataError.
    """
    norm_constants(normalize)  # validate early
    spec = LoaderSpec(
        train=train,
        batch_size=batch_size,
        image_size=image_size,
        recipe=get_recipe(augment),
        normalize=normalize,
        device=torch.device(device),
        rank=rank,
        world_size=world_size,
        seed=seed,
        num_threads=num_threads,
        drop_last=drop_last,
        views=views,
        balanced=balanced,
        skip_bad=skip_bad,
    )
    return _backend(loader)(samples, spec)


def build_tta_loader(samples: SampleSet, *, views: int = 20, augment: str, **options: Any):
    """Test-time augmentation loader of (views float32 V x N x 3 x S x S, labels int64 N); `options` are
    build_loader's (batch_size, image_size, normalize, loader, device, rank, world_size, seed, num_threads).

    The first ceil(V/2) views come from the recipe's branch 1 (flip/rotate), the rest from branch 2
    (gray/scale); the clean image is not among them. Evaluation sharding, nothing dropped.
    """
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    if get_recipe(augment) is None:
        raise DataError("test-time augmentation needs an augment recipe ('fer2013' or 'rafdb')")
    return build_loader(samples, train=False, augment=augment, drop_last=False, views=views, **options)
