"""The entry-point skeleton of `train.run` and `train.fuse`: configure, set up logging and the process
group, choose the run folder and the input pipeline once, run the body, and map every outcome to an
exit code.

Exit codes (both commands): 0 finished (report written); 1 the run failed (non-finite loss, bad data,
bad or missing checkpoint, including a bad --resume file or fusion member); 2 bad command line or
config; 130 / 143 stopped by SIGINT / SIGTERM (train.run saves last.pt first).
"""

from __future__ import annotations

import logging
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from ddakern.models.weights import WeightsError
from train.checkpoint import CheckpointError
from train.config import Config, ConfigError
from train.data import DataError
from train.distributed import DistEnv, broadcast_object, cleanup, setup
from train.engine import NonFiniteLoss
from train.signals import StopRequested
from train.sources import choose_loader

log = logging.getLogger("train")
Job = TypeVar("Job")

RUN_FAILURES = (NonFiniteLoss, DataError, WeightsError, CheckpointError)
"""Errors that end a run with one line and exit code 1."""


def exit_code(e: BaseException) -> int:
    """2 for bad options, 1 for a failed run."""
    return 2 if isinstance(e, ConfigError) else 1


def print_failure(e: BaseException) -> int:
    """Print `error: <one line>` on stderr; returns the exit code."""
    print(f"error: {e}", file=sys.stderr)
    return exit_code(e)


@dataclass
class Session:
    """What every entry point's body gets: the config, the process's place, the run folder, the input
    pipeline that runs (decided once, see `train.sources.choose_loader`) and the start time."""

    cfg: Config
    env: DistEnv
    out: Path
    loader: str
    started: float


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def enable_fused_ops(cfg: Config) -> None:
    """--fused-ops: select the fused-op backend (--ops-backend) before models are built."""
    if cfg.fused_ops:
        import ddakern

        ddakern.use_ops_backend(cfg.ops_backend)


def out_dir(cfg: Config, env: DistEnv, stem: str) -> Path:
    """--out, or runs/<stem>-<timestamp> chosen by rank 0 and broadcast (one folder for all ranks)."""
    if cfg.out is None:
        cfg.out = broadcast_object(f"runs/{stem}-{time.strftime('%Y%m%d-%H%M%S')}", env)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _setup(cfg: Config) -> DistEnv:
    env = setup(cfg.device)
    logging.basicConfig(
        level=logging.INFO if env.is_main else logging.WARNING, format="%(message)s", stream=sys.stderr, force=True
    )
    if cfg.sync_bn and env.distributed and env.device.type != "cuda":
        raise ConfigError("--sync-bn needs CUDA devices (torch's SyncBatchNorm has no CPU implementation)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return env


def run_entry(
    argv: Sequence[str] | None,
    configure: Callable[[list[str]], tuple[Config, Job]],
    body: Callable[[Job, Session], int],
    *,
    folder_stem: Callable[[Config, Job], str],
    stop_hint: str,
) -> int:
    """Run one entry point: `configure(argv)` -> (config, job), then `body(job, session)`; returns the
    exit code. `folder_stem` names the default run folder; `stop_hint` follows a SIGINT/SIGTERM message."""
    started = time.perf_counter()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cfg, job = configure(argv)
    except (ConfigError, *RUN_FAILURES) as e:
        return print_failure(e)
    try:
        env = _setup(cfg)
    except (ConfigError, RuntimeError) as e:  # RuntimeError: the asked device is not there
        cleanup()
        return print_failure(ConfigError(str(e)))
    try:
        out = out_dir(cfg, env, folder_stem(cfg, job))
        return body(job, Session(cfg, env, out, choose_loader(cfg.loader), started))
    except StopRequested as e:
        if env.is_main:
            print(f"{e}; {stop_hint.format(path=e.path)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # outside the training loop (setup, final evaluation): nothing new to save
        print("interrupted outside the training loop; checkpoints already written are kept", file=sys.stderr)
        return 130
    except (ConfigError, *RUN_FAILURES) as e:
        return print_failure(e)
    finally:
        cleanup()
