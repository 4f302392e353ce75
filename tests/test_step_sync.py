"""The host side of a sync-free loop: the progress bar reads its copy only once it has landed, and
evaluation counts its confusion matrix on the device (the device side: tests/test_cuda_dry_run.py)."""

from __future__ import annotations

import pytest
import torch

from train import progress
from train.evaluate import confusion_counts


class Event:
    """Stands in for the CUDA event `landing_event` records (none can be made without a GPU)."""

    def __init__(self) -> None:
        self.landed = False

    def query(self) -> bool:
        return self.landed


def test_bar_reads_a_copy_only_once_its_event_says_it_landed(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[Event] = []
    monkeypatch.setattr(progress, "landing_event", lambda t: events.append(Event()) or events[-1])
    bar = progress.EpochBar(total=10, initial=0, desc="epoch 1/1", enabled=True)

    def update(sums: torch.Tensor) -> str:
        bar._last_post = float("-inf")  # post at every step
        bar.update(sums, images=8)
        return bar.bar.postfix or ""

    sums = torch.tensor([4.0, 1.0, 2.0], dtype=torch.float64)  # [loss sum, correct, count]
    assert update(sums) == "" and len(events) == 1  # first copy started, nothing to show yet
    sums += torch.tensor([8.0, 3.0, 2.0], dtype=torch.float64)  # the loop adds in place
    assert update(sums) == "" and len(events) == 1  # not landed: keep the figures, start no new copy
    events[0].landed = True
    shown = update(sums)
    assert "loss=2.0000" in shown and "acc=50.00" in shown  # the first copy's figures (a snapshot)
    assert len(events) == 2  # and the next copy is on its way
    bar.close()


def test_confusion_counts_match_bincount() -> None:
    classes = 7
    y, pred = torch.randint(0, classes, (2, 500))
    want = torch.bincount(y * classes + pred, minlength=classes * classes)
    got = confusion_counts(y, pred, classes)
    assert got.dtype == torch.int64 and torch.equal(got, want)
