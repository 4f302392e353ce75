"""TensorBoard event files of a run (the `tensorboard` package's writer, via torch.utils.tensorboard):
loss, accuracy, learning rate and images/s per epoch, beside metrics.jsonl in <out>/tb.

On by default when tensorboard is installed (--no-tensorboard: off); without it the run says so in one line
and goes on. Rank 0 alone writes. A sweep gives each run its own folder, so `tensorboard --logdir SWEEP`
shows them all.
"""

from __future__ import annotations

import logging
import numbers
from pathlib import Path
from typing import Any

log = logging.getLogger("train")

__all__ = ["TAGS", "EventLog", "open_event_log"]

TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "val_loss_ema": "loss/val_ema",
    "train_acc": "accuracy/train",
    "val_acc": "accuracy/val",
    "val_acc_ema": "accuracy/val_ema",
    "test_acc": "accuracy/test",
    "test_acc_ema": "accuracy/test_ema",
    "best_val_acc": "accuracy/best_val",
    "lr": "lr",
    "train_images_per_s": "throughput/train_images_per_s",
}
"""metrics.jsonl key -> TensorBoard tag (keys not listed are not plotted)."""


class EventLog:
    """A SummaryWriter on `folder` that writes metrics rows (x axis: epoch)."""

    def __init__(self, folder: Path, writer_cls: Any) -> None:
        self.folder = folder
        self.writer = writer_cls(log_dir=str(folder))

    def row(self, row: dict[str, Any]) -> None:
        for key, tag in TAGS.items():
            value = row.get(key)
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                self.writer.add_scalar(tag, float(value), global_step=int(row["epoch"]))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_event_log(out: Path, enabled: bool, is_main: bool) -> EventLog | None:
    """The run's event log, or None (turned off, not rank 0, or tensorboard missing: said in one line)."""
    if not enabled or not is_main:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("tensorboard: not installed, no event files (pip install tensorboard, or --no-tensorboard)")
        return None
    folder = out / "tb"
    log.info(f"tensorboard: events in {folder} (tensorboard --logdir {folder})")
    return EventLog(folder, SummaryWriter)
