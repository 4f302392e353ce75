"""--skip-bad in the loaders: which files turned out bad while a run read them, and how a batch stays valid.

A file can go bad after the start-up check (truncated by a copy, deleted, its data damaged). Without
--skip-bad the loader stops the run with one line naming it; with it the sample is skipped and counted
here. Training batches replace the bad sample (see `replacement`) so every rank keeps the same batch
size and number of steps (DDP's collectives pair steps across ranks; a shorter or missing batch on one
rank would hang or skew the others, and resume seeks by step count); evaluation batches drop it, so no
image is counted twice in an accuracy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import DataError

log = logging.getLogger("train.data")

SHOWN = 5
"""How many bad files the log line and summary.json name."""


def bad_path(message: str) -> str:
    """The path a DataError message starts with (`<path>: <problem>`), else the whole message."""
    head, sep, _ = message.partition(": ")
    return head if sep else message


@dataclass
class SkipLog:
    """Bad files one loader (or, merged, a whole run) skipped: distinct files in the order found, with the
    first problem seen for each, and how many samples were skipped in all (a file counts once per read)."""

    files: dict[str, str] = field(default_factory=dict)
    occurrences: int = 0

    def record(self, message: str) -> None:
        """Count one skipped sample; `message` is the DataError line (`<path>: <problem>`)."""
        path = bad_path(message)
        if not self.files:
            log.warning(f"--skip-bad: skipping a bad file found while reading ({message})")
        self.files.setdefault(path, message)
        self.occurrences += 1

    def merge(self, others: Iterable[SkipLog]) -> SkipLog:
        """A new log holding this one's and `others`' files and counts."""
        out = SkipLog(dict(self.files), self.occurrences)
        for other in others:
            for path, message in other.files.items():
                out.files.setdefault(path, message)
            out.occurrences += other.occurrences
        return out

    @property
    def count(self) -> int:
        return len(self.files)

    def line(self) -> str:
        """One log line: the count and the first few files with their problems."""
        shown = "; ".join(list(self.files.values())[:SHOWN])
        more = f"; and {self.count - SHOWN} more" if self.count > SHOWN else ""
        return f"--skip-bad: {self.count} bad file(s) skipped so far ({self.occurrences} sample(s)): {shown}{more}"

    def summary(self) -> dict[str, Any]:
        """summary.json's `data.skipped_during_training`."""
        return {
            "count": self.count,
            "occurrences": self.occurrences,
            "first": [{"path": p, "problem": m} for p, m in list(self.files.items())[:SHOWN]],
        }


def replacement(loaded: Sequence[Any | None], k: int, fallback: Callable[[int], Any | None]) -> Any:
    """The stand-in for the bad sample at batch position `k`: the next sample of the batch that loaded
    (cyclically), or, when the whole batch is bad, `fallback(j)` for j = 1, 2, ... (the next files of the
    set, the caller's choice) until one loads. Deterministic for a given batch; DataError when nothing loads."""
    n = len(loaded)
    for j in range(1, n):
        item = loaded[(k + j) % n]
        if item is not None:
            return item
    for j in range(1, 1025):
        item = fallback(j)
        if item is not None:
            return item
    raise DataError("--skip-bad: no loadable image in the batch or the 1024 files after it; is the data set gone?")
