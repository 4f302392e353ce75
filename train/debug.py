"""The --debug-* hooks the tests use to stop, corrupt or trace a run at a chosen step."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .config import Config


def nan_loss_now(cfg: Config, global_step: int) -> bool:
    """--debug-nan-at-step: True when the step about to run (global_step + 1) is the chosen one."""
    return cfg.debug_nan_at_step is not None and global_step + 1 == cfg.debug_nan_at_step


def record_seen(cfg: Config, rank: int, x: torch.Tensor, epoch: int) -> None:
    """--debug-seen: append one content hash per training image (with --augment none: a sample id)."""
    path = Path(f"{cfg.debug_seen}.rank{rank}")
    arr = x.detach().float().cpu().numpy()
    with open(path, "a", encoding="utf-8") as fh:
        for img in arr:
            fh.write(f"{epoch} {hashlib.sha1(img.tobytes()).hexdigest()[:20]}\n")


def wait_for_signal(global_step: int, announce: bool, signalled: Callable[[], bool]) -> None:
    """--debug-wait-at-step: announce the step on stdout and wait (up to 120 s) for a signal."""
    if announce:
        print(f"debug-wait {global_step}", flush=True)
    deadline = time.monotonic() + 120
    while not signalled() and time.monotonic() < deadline:
        time.sleep(0.01)
