"""The per-epoch tqdm bar on stderr (rank 0, --progress) with running loss, accuracy and images/s."""

from __future__ import annotations

import sys
import time
from typing import Any

import torch
from tqdm import tqdm


def landing_event(t: torch.Tensor) -> Any:
    """A CUDA event recorded after the copies queued so far on t's stream (None for a CPU tensor: its
    copies are done when they return). `query()` says, without waiting, whether they have landed."""
    if not t.is_cuda:
        return None
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(t.device))
    return event


class EpochBar:
    """A tqdm bar for one epoch; `update` posts the running figures at most twice a second.

    The figures come from a non-blocking device-to-host copy, read only once an event recorded after
    it says it has landed: until then the bar keeps the figures it shows, so it never makes the host
    wait for the device.
    """

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
        self._landed: Any = None

    def update(self, sums: torch.Tensor, images: int, steps: int = 1) -> None:
        """`steps` batches done; `sums` = [loss sum, correct, count] so far, `images` trained this epoch (all
        ranks)."""
        self.bar.update(steps)
        now = time.perf_counter()
        if self.bar.disable is not False or now - self._last_post <= 0.5:
            return
        self._last_post = now
        if self._pending is not None:
            if self._landed is not None and not self._landed.query():
                return  # still on its way: keep the figures shown and the copy in flight
            self._show(self._pending.tolist(), images, now)
        # start the next copy without waiting for it; a later post reads it once it has landed
        self._pending = sums.detach().to("cpu", copy=True, non_blocking=True)
        self._landed = landing_event(sums)

    def _show(self, figures: list[float], images: int, now: float) -> None:
        loss_sum, correct, count = figures
        self.bar.set_postfix(
            loss=f"{loss_sum / max(count, 1):.4f}",
            acc=f"{100 * correct / max(count, 1):.2f}",
            img_s=f"{images / (now - self.start):.1f}",
        )

    def close(self) -> None:
        self.bar.close()
