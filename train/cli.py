"""The entry-point skeleton of `train.run` and `train.fuse`: configure, set up logging and the process
group, choose the run folder and the input pipeline once, run the body, and map every outcome to an
exit code.

Exit codes (both commands): 0 finished (report written); 1 the run failed (non-finite loss, bad data,
bad or missing checkpoint, including a bad --resume file or fusion member); 2 bad command line or
config, including an --out that another run is using; 130 / 143 stopped by SIGINT / SIGTERM (train.run saves
last.pt first). A file that cannot be written (a full disk) fails the run with one line naming it (exit 1);
files written before it (the previous checkpoints) are intact, as every write is atomic.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from ddakern.atomic import WriteError
from ddakern.dispatch import triton_interpret_requested
from ddakern.folder_lock import release
from ddakern.models.weights import WeightsError

from .checkpoint import CheckpointError
from .config import Config, ConfigError
from .data import DataError
from .distributed import DistEnv, broadcast_object, cleanup, setup
from .engine import NonFiniteLoss
from .run_folder import RunFolderError, claim, clean_stale_temporaries, remove_if_empty
from .session import Session
from .signals import StopRequested
from .sources import choose_loader

log = logging.getLogger("train")
Job = TypeVar("Job")

RUN_FAILURES = (NonFiniteLoss, DataError, WeightsError, CheckpointError, WriteError)
"""Errors that end a run with one line and exit code 1."""


def exit_code(e: BaseException) -> int:
    """2 for bad options, 1 for a failed run."""
    return 2 if isinstance(e, ConfigError) else 1


def print_failure(e: BaseException) -> int:
    """Print `error: <one line>` on stderr; returns the exit code."""
    print(f"error: {e}", file=sys.stderr)
    return exit_code(e)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def seed_rank(seed: int, rank: int) -> None:
    """Called once the model is built (the same initial weights on every rank): from here each rank draws
    from its own streams, seed + rank, for what it draws alone: dropout (torch), RandomErasing (Python's
    random) and mixup/cutmix (NumPy's). Re-seeding torch only left every rank erasing and mixing its images
    with the same draws. Rank 0 keeps the seed's streams, so a one-process run is unchanged."""
    if rank:
        seed_everything(seed + rank)


def enable_fused_ops(cfg: Config) -> None:
    """--fused-ops: select the fused-op backend (--ops-backend) before models are built."""
    if cfg.fused_ops:
        import ddakern

        ddakern.use_ops_backend(cfg.ops_backend)


def anchor_paths(cfg: Config) -> None:
    """Make --data-root absolute (as --out is in `out_dir`): checkpoints and config.json record it, and a
    resume from another working directory must read the same data."""
    if cfg.data_root is not None:
        cfg.data_root = str(Path(cfg.data_root).expanduser().absolute())


def out_dir(cfg: Config, env: DistEnv, stem: str) -> tuple[Path, bool, int | None]:
    """(--out, or runs/<stem>-<timestamp> chosen by rank 0 and broadcast, as an absolute path; whether this
    call created it; the folder's lock, held by rank 0 alone so that the ranks of one run share it). Checked
    first (train.run_folder.claim): a file, a file as parent, an unwritable place, a folder another run holds
    or one holding a run that is not resumed (without --overwrite) is a ConfigError; stale temporaries of
    interrupted saves are removed (under the lock: never another live run's)."""
    if cfg.out is None:
        cfg.out = broadcast_object(f"runs/{stem}-{time.strftime('%Y%m%d-%H%M%S')}", env)
    out = Path(cfg.out).absolute()
    cfg.out = str(out)  # checkpoints and config.json name the folder wherever the run is resumed from
    created, lock = False, None
    if env.is_main:
        try:
            created, lock = claim(out, resuming=cfg.resume is not None, overwrite=getattr(cfg, "overwrite", False))
        except RunFolderError as e:
            raise ConfigError(str(e)) from None
        for p in clean_stale_temporaries(out):
            log.info(f"removed {p} (left by an interrupted save)")
    else:
        out.mkdir(parents=True, exist_ok=True)
    return out, created, lock


def check_ops_backend(cfg: Config, env: DistEnv) -> None:
    """--ops-backend triton needs a CUDA device (or TRITON_INTERPRET=1): found at start-up, not mid-step."""
    if not getattr(cfg, "fused_ops", False) or getattr(cfg, "ops_backend", "auto") != "triton":
        return
    if env.device.type != "cuda" and not triton_interpret_requested():
        raise ConfigError(
            f"--ops-backend triton needs a CUDA device (the run is on {env.device}); "
            "use --ops-backend auto or torch, or set TRITON_INTERPRET=1 to run the kernels interpreted"
        )


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
    anchor_paths(cfg)
    try:
        env = _setup(cfg)
    except (ConfigError, RuntimeError) as e:  # RuntimeError: the asked device is not there
        cleanup()
        return print_failure(ConfigError(str(e)))
    out, created, lock = None, False, None
    try:
        check_ops_backend(cfg, env)
        out, created, lock = out_dir(cfg, env, folder_stem(cfg, job))
        code = body(job, Session(cfg, env, out, choose_loader(cfg.loader), started))
        created = False  # finished: the folder holds the run
        return code
    except StopRequested as e:
        if env.is_main:
            print(f"{e}; {stop_hint.format(path=e.path)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # outside the training loop (setup, final evaluation): nothing new to save
        print("interrupted outside the training loop; checkpoints already written are kept", file=sys.stderr)
        return 130
    except WriteError as e:  # a full disk: the files written before are intact (atomic writes)
        last = out / "last.pt" if out is not None else None
        line = f"error: {e}"
        if last is not None and last.is_file() and "{path}" in stop_hint:
            line += f"; the earlier checkpoints are intact: {stop_hint.format(path=last)} once there is room"
        print(line, file=sys.stderr)
        return exit_code(e)
    except (ConfigError, *RUN_FAILURES) as e:
        return print_failure(e)
    finally:
        if created and out is not None and env.is_main:
            remove_if_empty(out)  # a failed run that wrote nothing leaves no empty folder behind
        release(lock)  # the folder is free for the next run (the kernel would drop it at exit anyway)
        cleanup()
