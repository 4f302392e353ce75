"""Learning-rate schedules, all stepped once per epoch: ReduceLROnPlateau on (100 - best validation
accuracy), ExponentialLR, or timm's CosineLRScheduler with a linear warm-up (per epoch, timm's default
`t_in_epochs=True`, so the schedule depends on epochs alone, not on the batch count)."""

from __future__ import annotations

from typing import Any

import torch

from ..config import Config
from . import need

__all__ = ["make_scheduler", "step_scheduler"]

WARMUP_START = 0.01
"""The warm-up starts at lr x this (timm train.py's --warmup-lr 1e-5 against its lr range of about 1e-3)."""


def make_scheduler(cfg: Config, optimizer: torch.optim.Optimizer) -> Any:
    """The --scheduler of `optimizer` (None for "none"); timm's cosine sets the warm-up lr at once."""
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience
        )
    if cfg.scheduler == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.gamma)
    if cfg.scheduler == "cosine":
        timm_scheduler = need("timm.scheduler", "--scheduler cosine")
        return timm_scheduler.CosineLRScheduler(
            optimizer,
            t_initial=cfg.epochs,
            lr_min=cfg.min_lr,
            warmup_t=cfg.warmup_epochs,
            warmup_lr_init=cfg.lr * WARMUP_START,
        )
    return None


def step_scheduler(scheduler: Any, epochs_done: int, best_metric: float) -> None:
    """End of an epoch: plateau sees (100 - best accuracy), timm's scheduler the next epoch's index."""
    if scheduler is None:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(100.0 - best_metric)
    elif isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler):
        scheduler.step()
    else:  # timm
        scheduler.step(epochs_done)
