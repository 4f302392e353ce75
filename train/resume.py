"""Resume seeking: bring the train loader and the RNGs to the saved point of an interrupted epoch."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from . import checkpoint as ckpt_io

if TYPE_CHECKING:
    import torch

log = logging.getLogger("train")


def replay_epochs(loader: Any, epochs: int) -> None:
    """Run the input pipeline through `epochs` earlier epochs (data only, no training): a DALI pipeline's
    augmentation stream runs on across epochs, so this reaches the state an uninterrupted run had."""
    if epochs <= 0:
        return
    log.info(f"resume: replaying the input pipeline's first {epochs} epoch(s) (no training)")
    for k in range(epochs):
        loader.set_epoch(k)
        for _ in loader:
            pass


def seek(
    loader: Any, epoch: int, skip: int, rng: dict[str, Any] | None, device: torch.device | None = None
) -> Iterator:
    """An iterator over `epoch` of `loader` positioned after its first `skip` batches, with the saved RNG
    states applied where the uninterrupted run had them (before iteration starts at an epoch boundary, after
    the replayed batches mid-epoch)."""
    loader.set_epoch(epoch)
    if rng is not None and skip == 0:
        ckpt_io.set_rng_state(rng, device)
        rng = None
    it = iter(loader)
    for _ in range(skip):  # resume mid-epoch: replay the seeded order up to the saved step
        next(it)
    if rng is not None:
        ckpt_io.set_rng_state(rng, device)
    return it
