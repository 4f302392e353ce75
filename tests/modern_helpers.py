"""Shared pieces of the modern-method tests: a Trainer on tensors (no loaders), a tiny MLP, fixed batches."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from train.config import resolve
from train.distributed import DistEnv
from train.engine import Trainer

CLASSES = tuple("abcdefg")


def mlp(seed: int = 0) -> nn.Module:
    """A model without batch norm: DDP's averaged gradient equals the gradient over the union of the batches."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, len(CLASSES)))


def bn_net(seed: int = 0) -> nn.Module:
    """A tiny convolutional model with batch norm (running statistics to check)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 7)
    )


def batches(n: int, size: int, seed: int, image: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, 3, image, image, generator=g), torch.randint(0, len(CLASSES), (size,), generator=g))
        for _ in range(n)
    ]


def trainer(net: nn.Module, env: DistEnv | None = None, out: Path | None = None, **options) -> Trainer:
    """A Trainer of `net` with the synthetic recipe and `options` (Config fields), on the CPU."""
    cfg = resolve({"model": "resnet18", "device": "cpu", "dropout": 0.0, **options}, {})
    env = env or DistEnv(0, 1, 0, torch.device("cpu"))
    out = out or Path(tempfile.mkdtemp(prefix="modern-"))
    return Trainer(cfg, env, net, CLASSES, {"train": []}, out, np.arange(len(CLASSES)))


DDP_OPTIONS = dict(
    sam="sam", accumulate=2, optimizer="adam", ema=0.5, label_smoothing=0.1, mixup=0.8, cutmix=1.0, random_erasing=0.5
)
"""The DDP test's Trainer options: SAM, accumulation and every batch-level method at once."""


def seed_rank_generators(rank: int) -> None:
    """The generators RandomErasing (Python's `random`) and Mixup (NumPy's) draw from, seeded per rank."""
    random.seed(100 + rank)
    np.random.seed(100 + rank)


class PerRankMixing:
    """A one-process stand-in for 2 DDP ranks' batch preparation: each half of a whole batch is erased and
    mixed as the rank that holds it would, with that rank's own generator states."""

    def __init__(self, prepare, ranks: int = 2) -> None:
        self.prepare = prepare
        self.states = []
        for r in range(ranks):
            seed_rank_generators(r)
            self.states.append((random.getstate(), np.random.get_state()))

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.states)
        xs, ts = [], []
        for r, (xr, yr) in enumerate(zip(x.chunk(n), y.chunk(n))):
            random.setstate(self.states[r][0])
            np.random.set_state(self.states[r][1])
            xm, t = self.prepare(xr.clone(), yr)
            self.states[r] = (random.getstate(), np.random.get_state())
            xs.append(xm)
            ts.append(t)
        return torch.cat(xs), torch.cat(ts)
