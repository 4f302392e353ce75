"""The tests' 2-process gloo jobs on 127.0.0.1, defined once: through torchrun (what users run), or the two
ranks started directly where the test is about DDP itself and not the launcher (a torchrun launcher is
one more Python process, about 2.5 CPU-seconds of imports)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for the rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **extra)


def torchrun(*args: str, timeout: int = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run` with 2 CPU processes rendezvousing on 127.0.0.1, running `args` (a
    script and its arguments, or -m and a module's) from the source tree; output captured, never raises.
    `env` adds variables."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args,
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=_env(**(env or {})), capture_output=True, text=True, timeout=timeout)


def two_ranks(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`script args` as ranks 0 and 1 of a gloo group on 127.0.0.1, started with the variables torchrun sets
    (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT). As torchrun does, a rank
    that fails stops the other (which would wait in a collective). Returns the first failing rank's exit code
    (else 0) and both ranks' output, rank 0's first; never raises."""
    port = str(free_port())
    procs, logs = [], []
    for rank in (0, 1):
        env = _env(
            RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
        )  # fmt: skip
        logs.append((tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")))  # no pipe to fill up
        cmd = [sys.executable, script, *args]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, text=True, stdout=logs[-1][0], stderr=logs[-1][1]))
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        if any(p.returncode not in (None, 0) for p in procs):
            break
        time.sleep(0.05)
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
    outputs = []
    for out, err in logs:
        out.seek(0), err.seek(0)
        outputs.append((out.read(), err.read()))
        out.close(), err.close()
    code = next((p.returncode for p in procs if p.returncode != 0), 0)
    stdout = "".join(out for out, _ in outputs)
    stderr = "".join(f"[rank {rank}]\n{err}" for rank, (_, err) in enumerate(outputs) if err)
    return subprocess.CompletedProcess([script, *args], code, stdout, stderr)
