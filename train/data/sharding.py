"""Per-rank, per-epoch sample order shared by the PyTorch path and the DALI array path."""

from __future__ import annotations

import math

import numpy as np

from .balanced import balanced_order


def shard_indices(
    n: int,
    *,
    rank: int,
    world_size: int,
    epoch: int,
    seed: int,
    shuffle: bool,
    equal: bool,
    drop_last: bool,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """Indices this rank reads in `epoch`.

    shuffle: a permutation seeded by (seed, epoch), identical on every rank; with `labels`, a class-balanced
    draw with replacement instead (train.data.balanced).
    equal (training): every rank gets the same count, n // world_size with drop_last, else
    ceil(n / world_size) with the first samples repeated as padding (as torch's DistributedSampler).
    not equal (evaluation): contiguous shards [floor(r n / W), floor((r + 1) n / W)), disjoint and covering,
    as DALI's readers shard.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world_size {world_size}")
    if shuffle and labels is not None:
        order = balanced_order(labels, seed, epoch)
    else:
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    if equal:
        if drop_last:
            per = n // world_size
        else:
            per = math.ceil(n / world_size)
            if per * world_size > n:
                order = np.concatenate([order, np.resize(order, per * world_size - n)])
        return order[rank * per : (rank + 1) * per]
    return order[(rank * n) // world_size : ((rank + 1) * n) // world_size]


def batch_count(n: int, batch_size: int, drop_last: bool) -> int:
    """Number of batches of `batch_size` from `n` samples."""
    return n // batch_size if drop_last else math.ceil(n / batch_size)
