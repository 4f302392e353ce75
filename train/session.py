"""The Session every entry point's body gets (its own module: train.cli builds it, train.report reads it,
and report must not import cli, which imports the engine, which imports report)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .distributed import DistEnv


@dataclass
class Session:
    """What every entry point's body gets: the config, the process's place, the run folder, the input
    pipeline that runs (decided once, see `train.sources.choose_loader`) and the start time."""

    cfg: Config
    env: DistEnv
    out: Path
    loader: str
    started: float
