"""The per-epoch tqdm bar on stderr (rank 0, --progress) with running loss, accuracy and images/s."""

from __future__ import annotations

import sys
import time

import torch
from tqdm import tqdm


class EpochBar:
    """A tqdm bar for one epoch; `update` posts the running figures at most twice a second."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool) -> None:
        self.bar = tqdm(
            total=total,
            initial=initial,
            desc=desc,
            file=sys.stderr,
            disable=not enabled,
            leave=False,
            dynamic_ncols=True,
        )
        self.start, self._last_post = time.perf_counter(), 0.0
        self._pending: torch.Tensor | None = None

    def update(self, sums: torch.Tensor, images: int) -> None:
        """One step done; `sums` = [loss sum, correct, count] so far, `images` trained this epoch (all ranks)."""
        self.bar.update(1)
        now = time.perf_counter()
        if self.bar.disable is False and now - self._last_post > 0.5:
            self._last_post = now
            # show the figures copied at the previous post (long done by now) and start the next copy
            # without waiting: the bar never makes the host wait for the device
            shown, self._pending = self._pending, sums.detach().to("cpu", copy=True, non_blocking=True)
            if shown is None:
                return
            loss_sum, correct, count = shown.tolist()
            self.bar.set_postfix(
                loss=f"{loss_sum / max(count, 1):.4f}",
                acc=f"{100 * correct / max(count, 1):.2f}",
                img_s=f"{images / (now - self.start):.1f}",
            )

    def close(self) -> None:
        self.bar.close()
