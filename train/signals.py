"""SIGINT/SIGTERM during training: record the signal, finish the step, save last.pt, exit 128 + signal."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any


class StopRequested(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was saved. `exit_code` is 128 + the signal number."""

    def __init__(self, signum: int, path: Path) -> None:
        self.signum, self.path = signum, path
        super().__init__(f"stopped by {signal.Signals(signum).name}; checkpoint saved to {path}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class SignalFlag:
    """Installs SIGINT/SIGTERM handlers that only record the signal; `restore()` puts the old ones back."""

    def __init__(self) -> None:
        self.signum = 0
        self._old: dict[int, Any] = {}
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.signum:
            print(f"\n{signal.Signals(signum).name}: finishing the current step, then saving", file=sys.stderr)
        self.signum = signum

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
