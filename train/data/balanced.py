"""Class-balanced sampling (`--balanced`), as POSTER++ and APViT train on the imbalanced AffectNet.

An epoch draws as many samples as the split has, with replacement, each with probability proportional to
1 / (size of its class): every class is seen about equally often. Same (seed, epoch) -> same order on
every rank, so the per-rank shards stay disjoint slices of one order.
"""

from __future__ import annotations

import numpy as np


def balanced_order(labels: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """len(labels) indices drawn with replacement, classes equally likely (empty classes ignored)."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        return np.zeros(0, np.int64)
    counts = np.bincount(labels)
    weights = 1.0 / counts[labels]
    rng = np.random.default_rng([seed, epoch, 7])
    return rng.choice(labels.size, size=labels.size, replace=True, p=weights / weights.sum())
