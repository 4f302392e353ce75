"""Benchmark sizes and timing helpers: CUDA-sized runs on a GPU, scaled-down runs on CPU."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Scale:
    """Sizes for the benchmarks on this device."""

    device: torch.device
    batch: int
    image_size: int
    rounds: int
    cuda: bool


def bench_scale() -> Scale:
    if torch.cuda.is_available():
        return Scale(torch.device("cuda"), batch=48, image_size=224, rounds=20, cuda=True)
    return Scale(torch.device("cpu"), batch=4, image_size=64, rounds=3, cuda=False)


SCALE = bench_scale()


def sync() -> None:
    if SCALE.cuda:
        torch.cuda.synchronize()


def peak_memory_reset() -> None:
    if SCALE.cuda:
        torch.cuda.reset_peak_memory_stats()


def peak_memory_bytes() -> int | None:
    """Peak CUDA memory since the last reset (None on CPU, where it is not tracked per run)."""
    return torch.cuda.max_memory_allocated() if SCALE.cuda else None
