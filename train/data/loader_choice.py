"""`--loader auto`: which input pipeline a run uses, and the reason printed in the run header.

CUDA: DALI (GPU decode and augmentation) when installed. CPU: DALI's CPU operators are sometimes faster and
sometimes slower than the PyTorch loader (0.63-1.31x over five bench runs, docs/benchmarks.md), depending on
the data (JPEG vs decoded arrays, image size) and the machine, so both are timed on a few training
batches of this run's data and the faster one is used.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import numpy as np

from .samples import SampleSet

PROBE_BATCHES = 3
"""Batches timed per loader (after one warm-up batch)."""


def images_per_s(loader: Iterable, batches: int = PROBE_BATCHES) -> float:
    """Images per second over `batches` batches after one warm-up batch (building the pipeline)."""
    it = iter(loader)
    next(it)
    images, start = 0, time.perf_counter()
    for _ in range(batches):
        try:
            x, _ = next(it)
        except StopIteration:
            break
        images += x.shape[-4] if x.ndim == 5 else x.shape[0]
    elapsed = time.perf_counter() - start
    for _ in it:  # finish the pass so the loader can be reset (DALI)
        pass
    return images / elapsed if elapsed > 0 else 0.0


def probe_subset(samples: SampleSet, batch_size: int, batches: int = PROBE_BATCHES) -> SampleSet:
    """The first (warm-up + `batches`) batches' worth of a split, spread over the whole split."""
    n = min(len(samples), (batches + 1) * batch_size)
    return samples.subset(np.linspace(0, len(samples) - 1, n).astype(np.int64))


def choose_on_cpu(make: Callable[[str], Iterable], dali: bool) -> tuple[str, str]:
    """("dali" | "torch", reason): the faster of the two on `make(name)` loaders over the probe subset."""
    if not dali:
        return "torch", "auto on CPU: nvidia-dali not installed"
    speed = {name: images_per_s(make(name)) for name in ("torch", "dali")}
    best = max(speed, key=speed.get)
    other = "dali" if best == "torch" else "torch"
    return best, (
        f"auto on CPU: measured {speed[best]:.0f} vs {speed[other]:.0f} images/s ({best} vs {other}) "
        "on a few training batches"
    )


def choose(requested: str, cuda: bool, dali: bool, make: Callable[[str], Iterable]) -> tuple[str, str]:
    """(loader, reason) for --loader `requested` on a CUDA or CPU device."""
    if requested == "torch":
        return "torch", "--loader torch"
    if requested == "dali":
        return ("dali", "--loader dali") if dali else ("torch", "--loader dali but nvidia-dali is not installed")
    if cuda:
        return ("dali", "auto on CUDA: DALI with GPU decode") if dali else ("torch", "auto: nvidia-dali not installed")
    return choose_on_cpu(make, dali)
