"""Run a list of train.run / train.fuse runs, one folder each, resumably, on the executor asked for.

A run's folder says where it stands: summary.json -> finished (skipped); last.pt -> interrupted
(continued with train.run's `--resume <folder>/last.pt`); otherwise it starts (again) from scratch.
Each run owns its folder through train.run's folder lock, the sweep owns the sweep folder the same way.

Executors:
- inline: each run in this process, one after another (a CPU machine: no start-up cost per run).
- local: each run in its own `python -m train.run` process, one per GPU at a time (CUDA_VISIBLE_DEVICES
  per process, which must be set before CUDA starts: hence processes), one at a time without a GPU.
  A crashing run cannot take the sweep with it, and its memory is returned when it ends.
- slurm: a SLURM job array through submitit (one GPU per array task; `submitit-local` runs the same
  path through submitit's LocalExecutor, for tests and machines without SLURM). A task that reaches
  its time limit or is preempted is requeued and resumes from its last.pt.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("train.reproduce")

EXECUTORS = ("inline", "local", "slurm", "submitit-local")
PRUNE = {"none": (), "last": ("last.pt",), "all": ("last.pt", "best.pt")}
"""Checkpoints removed from a finished run's folder (--prune): a table needs only summary.json and
metrics.jsonl, and a DDA model's last.pt (weights and optimiser state) is hundreds of MB."""
STOP_CODES = (130, 143)
"""Exit codes of a run stopped by SIGINT / SIGTERM: the sweep stops as well."""


@dataclass(frozen=True)
class Job:
    """One run: its folder and the flags of `python -m <module>` (without --out / --resume)."""

    key: str
    folder: Path
    module: str
    flags: tuple[str, ...]
    resumable: bool = True
    """train.run resumes from last.pt; train.fuse runs again (its heads train in minutes)."""


@dataclass
class Outcome:
    """What became of a job in this invocation."""

    job: Job
    state: str
    """skipped (already finished), done, failed, stopped or not-run."""
    exit_code: int | None = None
    resumed: bool = False


@dataclass
class SlurmOptions:
    """Where and how long the array tasks run (submitit's parameters)."""

    partition: str | None = None
    timeout_min: int = 24 * 60
    cpus_per_task: int = 8
    gpus_per_task: int = 1
    array_parallelism: int = 64
    wait: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def run_state(folder: Path) -> str:
    """finished (summary.json readable), interrupted (last.pt present) or new."""
    try:
        json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        return "finished"
    except (OSError, ValueError):
        pass
    return "interrupted" if (folder / "last.pt").is_file() else "new"


def command(job: Job) -> tuple[list[str], bool]:
    """(the run's flags for its state now, whether it resumes)."""
    if job.resumable and run_state(job.folder) == "interrupted":
        return [*job.flags, "--resume", str(job.folder / "last.pt")], True
    again = ["--overwrite"] if job.folder.exists() and any(job.folder.iterdir()) else []
    return [*job.flags, "--out", str(job.folder), *again], False


def run_inline(module: str, argv: Sequence[str]) -> int:
    """`python -m module argv` in this process; returns its exit code."""
    if module == "train.fuse":
        from .fuse import main
    else:
        from .run import main
    return int(main(list(argv)))


class SubmititJob:
    """The callable of one SLURM array task: runs the job in the task's process from its folder's state
    (so that a requeued task resumes); `checkpoint` is submitit's hook on timeout and preemption."""

    def __init__(self, job: Job):
        self.job = job

    def __call__(self) -> int:
        argv, _ = command(self.job)
        return run_inline(self.job.module, argv)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(SubmititJob(self.job))


def visible_gpus() -> list[str]:
    """The GPU ids runs may be pinned to: CUDA_VISIBLE_DEVICES's entries, else 0..device_count-1."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no usable CUDA: CPU
        return []


class Sweep:
    """Runs jobs on one executor; `run(jobs)` returns their outcomes (stops at the first stopped run)."""

    def __init__(
        self,
        executor: str,
        logs: Path,
        slurm: SlurmOptions | None = None,
        slurm_folder: Path | None = None,
        prune: str = "none",
    ):
        if executor not in EXECUTORS:
            raise ValueError(f"unknown executor {executor!r}; expected one of {', '.join(EXECUTORS)}")
        self.executor, self.logs, self.slurm = executor, logs, slurm or SlurmOptions()
        self.prune = PRUNE[prune]
        self.slurm_folder = slurm_folder or logs / "slurm"
        self.stopping = False
        self._children: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def run(self, jobs: Sequence[Job]) -> list[Outcome]:
        todo = [j for j in jobs if run_state(j.folder) != "finished"]
        outcomes = {j.key: Outcome(j, "skipped") for j in jobs if j not in todo}
        for j in outcomes.values():
            log.info(f"{j.job.key}: finished before, skipped")
        if todo and not self.stopping:
            if self.executor in ("slurm", "submitit-local"):
                done = self._submitit(todo)
            elif self.executor == "local":
                done = self._local(todo)
            else:
                done = self._inline(todo)
            outcomes.update({o.job.key: o for o in done})
        return [outcomes.get(j.key, Outcome(j, "not-run")) for j in jobs]

    def _finish(self, job: Job, code: int, resumed: bool) -> Outcome:
        state = "done" if code == 0 else "stopped" if code in STOP_CODES else "failed"
        if state == "stopped":
            self.stopping = True
        if state == "done":
            for name in self.prune:
                (job.folder / name).unlink(missing_ok=True)
        log.info(f"{job.key}: {state}" + (f" (exit {code})" if code else "") + (" after resuming" if resumed else ""))
        return Outcome(job, state, code, resumed)

    def _inline(self, jobs: Sequence[Job]) -> list[Outcome]:
        out = []
        for job in jobs:
            if self.stopping:
                break
            argv, resumed = command(job)
            log.info(f"{job.key}: {'resuming' if resumed else 'starting'} (in this process)")
            try:
                code = run_inline(job.module, argv)
            except KeyboardInterrupt:
                code = 130
            out.append(self._finish(job, code, resumed))
        return out

    def _local(self, jobs: Sequence[Job]) -> list[Outcome]:
        gpus = visible_gpus()
        slots: list[str | None] = list(gpus) if gpus else [None]
        free = list(slots)
        lock = threading.Lock()

        def one(job: Job) -> Outcome | None:
            if self.stopping:
                return None
            with lock:
                gpu = free.pop()
            try:
                return self._process(job, gpu)
            finally:
                with lock:
                    free.append(gpu)

        handled = (signal.SIGINT, signal.SIGTERM) if _main_thread() else ()
        previous = {s: signal.signal(s, self._forward) for s in handled}
        try:
            with ThreadPoolExecutor(max_workers=len(slots)) as pool:
                results = list(pool.map(one, jobs))
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
        return [r for r in results if r is not None]

    def _forward(self, signum: int, frame: Any) -> None:
        """SIGINT / SIGTERM to the sweep: pass it on to the running runs (they save last.pt and stop with
        130 / 143), start no other."""
        self.stopping = True
        with self._lock:
            for p in self._children:
                p.send_signal(signum)

    def _process(self, job: Job, gpu: str | None) -> Outcome:
        argv, resumed = command(job)
        env = dict(os.environ)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        self.logs.mkdir(parents=True, exist_ok=True)
        where = f"GPU {gpu}" if gpu is not None else "CPU"
        log.info(f"{job.key}: {'resuming' if resumed else 'starting'} on {where} (log {self.logs / job.key}.log)")
        with open(self.logs / f"{job.key}.log", "a", encoding="utf-8") as fh:
            p = subprocess.Popen(
                [sys.executable, "-m", job.module, *argv], stdout=fh, stderr=subprocess.STDOUT, env=env
            )
            with self._lock:
                self._children.add(p)
            try:
                code = p.wait()
            finally:
                with self._lock:
                    self._children.discard(p)
        return self._finish(job, code, resumed)

    def _submitit(self, jobs: Sequence[Job]) -> list[Outcome]:
        import submitit

        cluster = "slurm" if self.executor == "slurm" else "local"
        ex = submitit.AutoExecutor(folder=self.slurm_folder / "%j", cluster=cluster)
        o = self.slurm
        params: dict[str, Any] = dict(
            timeout_min=o.timeout_min, gpus_per_node=o.gpus_per_task, tasks_per_node=1, cpus_per_task=o.cpus_per_task
        )
        if cluster == "slurm":
            params.update(slurm_array_parallelism=o.array_parallelism, **o.extra)
            if o.partition:
                params["slurm_partition"] = o.partition
        else:
            params["gpus_per_node"] = 0 if not visible_gpus() else o.gpus_per_task
        ex.update_parameters(**params)
        resumed = {j.key: command(j)[1] for j in jobs}
        submitted = ex.submit_array([SubmititJob(j) for j in jobs])
        for j, s in zip(jobs, submitted):
            log.info(f"{j.key}: submitted as {cluster} job {s.job_id}")
        if not o.wait:
            return [Outcome(j, "submitted") for j in jobs]
        out = []
        for j, s in zip(jobs, submitted):
            try:
                code = int(s.result())
            except Exception as e:  # noqa: BLE001 - a task that died: its own log says why
                log.warning(f"{j.key}: the {cluster} job {s.job_id} failed: {str(e).strip().splitlines()[-1][:200]}")
                code = 1
            out.append(self._finish(j, code, resumed[j.key]))
        return out


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
