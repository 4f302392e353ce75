"""LoaderSpec: what a loader backend (DALI or PyTorch) is asked to deliver, one signature for both."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .recipes import AugmentRecipe


@dataclass(frozen=True)
class LoaderSpec:
    """Batches of `batch_size` images, resized to `image_size`, augmented by `recipe` (None: plain) and
    normalised (`unit` or `imagenet`), on `device`, from this rank's shard. `drop_last` defaults to
    `train`; `views` > 0: test-time augmentation with that many views; `num_threads`: DALI CPU threads,
    or PyTorch worker processes (<= 1: in-process)."""

    train: bool
    batch_size: int
    image_size: int
    recipe: AugmentRecipe | None
    normalize: str
    device: torch.device
    rank: int = 0
    world_size: int = 1
    seed: int = 113
    num_threads: int = 2
    drop_last: bool | None = None
    views: int = 0
    balanced: bool = False
    """Training: class-balanced epochs (train.data.balanced) instead of a permutation."""
    skip_bad: bool = False
    """A file found bad while reading is skipped and counted (train.data.skips) instead of ending the pass."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        object.__setattr__(self, "device", torch.device(self.device))
        if self.drop_last is None:
            object.__setattr__(self, "drop_last", self.train)
