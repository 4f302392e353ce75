"""Cut-proof result files of bench/gpu_check.sh's stages (standard library only).

A stage file (`stage<N>.json`) is one JSON object rewritten atomically (a temporary beside it, then
os.replace) after every measured row, so a stage killed at any moment leaves its last complete state.
Its layout: {"stage": N, "parts": {part: {...}}, "checks": {check: {...}}}. A *part* is one process the
shell runs under its own `timeout`; a *check* is one measured section inside it (rows, verdict, status).

The shell calls `start` before a part (the file exists, marked "started", before any work) and `mark`
after it, which turns a part or check still "started"/"running" into "killed" (timeout's exit codes) or
"crashed". `start` also records which files were already in the folder: the proof that each earlier
stage wrote its results before this one began. Standard library only, so the shell's calls cost
milliseconds (importing ddakern would import torch); hence its own six-line atomic write.

    python3 bench/stagefile.py start OUT/stage1.json --stage 1 --part pytest --limit 80
    python3 bench/stagefile.py mark OUT/stage1.json --part pytest --rc 124
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_PROCESS_START = time.monotonic()
_clock = time.monotonic  # the item timer of Check.room_for_next (a test replaces it)


def soft_deadline_left() -> float:
    """Seconds left before this part's soft deadline: GPU_CHECK_DEADLINE_S after GPU_CHECK_PART_START (the
    Unix time the shell started the part, so the imports before this module count), or after this module's
    import when the start is not given; inf when no deadline is set."""
    limit = os.environ.get("GPU_CHECK_DEADLINE_S")
    if not limit:
        return float("inf")
    try:
        return float(os.environ["GPU_CHECK_PART_START"]) + float(limit) - time.time()
    except (KeyError, ValueError):  # not set, or a `date` without %N
        return float(limit) - (time.monotonic() - _PROCESS_START)


KILLED_RCS = (124, 137, 143, -9, -15)  # timeout's TERM (124), KILL (137), a TERM that reached python (143)


def write_json(path: Path, obj: Any) -> None:
    """Write obj as JSON to path atomically (never a half-written file, even when killed mid-write)."""
    write_text(path, json.dumps(obj, indent=1, default=str))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> None:
    """Write text (UTF-8) to path atomically."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 -> what any new file of the user gets
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_json(path: Path) -> dict[str, Any]:
    """The stage file's object ({} when absent or unreadable: a killed writer never leaves half a file)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def now() -> float:
    """Wall-clock seconds (comparable across the stage processes)."""
    return round(time.time(), 3)


class Check:
    """One check of a stage: `data` is its JSON section; `save()` after every row; `finish()` at the end.

    Its soft deadline (`GPU_CHECK_DEADLINE_S` after `GPU_CHECK_PART_START`, set by the shell a little
    below the hard timeout as it starts the part; see soft_deadline_left) lets it stop between rows and
    still end normally; `left()` says how much is left. While a check is open, SIGTERM marks it "killed" and saves
    before the process exits."""

    def __init__(self, stage_file: StageFile, name: str, part: str) -> None:
        self.file, self.name = stage_file, name
        self.started = time.monotonic()
        self.data: dict[str, Any] = {"status": "running", "part": part, "started_at": now()}
        self._item_started: float | None = None
        self._longest_item = 0.0
        self._groups: list[int] = []  # process groups of running subprocesses, killed with this check
        stage_file.data.setdefault("checks", {})[name] = self.data
        self.save()
        signal.signal(signal.SIGTERM, self._on_term)

    def _on_term(self, signum: int, frame: Any) -> None:
        self._kill_groups()
        self.data["status"] = "killed"
        self.data["note"] = "SIGTERM (the part's hard timeout) during this check"
        self.save()
        os._exit(143)

    def left(self) -> float:
        """Seconds left before the soft deadline of this process (inf when none is set)."""
        return soft_deadline_left()

    def room_for_next(self, first_guess_s: float = 0.0) -> bool:
        """Call before each item (row, test): whether it is likely to end before the soft deadline, i.e.
        more time is left than the longest item so far took (`first_guess_s` before the first has ended).
        An item started with less is likely killed by the hard timeout (the margin between the two is 15%
        of the part: often shorter than one compile-heavy row), losing that item and failing the part."""
        t = _clock()
        if self._item_started is not None:
            self._longest_item = max(self._longest_item, t - self._item_started)
        self._item_started = t
        need = self._longest_item if self._longest_item > 0 else first_guess_s
        return self.left() > need

    def run(self, cmd: list[str], env: dict[str, str], timeout: float | None) -> tuple[int, str, str]:
        """Run cmd in its own process group; when it exits, past `timeout`, or when this part is killed, the
        whole group is killed: a tool that runs a child (compute-sanitizer runs python) would otherwise leave
        that child running on the GPU into the next part's timings. Output goes to files, not pipes, so a
        child left holding them cannot keep this waiting. Raises subprocess.TimeoutExpired (with the output
        so far) after killing the group."""
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env, start_new_session=True)
            self._groups.append(proc.pid)
            try:
                proc.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                self._kill_groups()  # the tool on a timeout; anything it left behind otherwise
            proc.wait()
            out.seek(0), err.seek(0)
            stdout, stderr = out.read(), err.read()
        if timed_out:
            raise subprocess.TimeoutExpired(cmd, timeout or 0, output=stdout, stderr=stderr)
        return proc.returncode, stdout, stderr

    def _kill_groups(self) -> None:
        while self._groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._groups.pop(), signal.SIGKILL)

    def save(self) -> None:
        self.data["elapsed_s"] = round(time.monotonic() - self.started, 3)
        self.file.save()

    def finish(self, ok: bool, status: str = "done") -> bool:
        """Record the verdict and save; returns ok."""
        self.data.update(status=status, ok=bool(ok), finished_at=now())
        self.save()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        return ok


class StageFile:
    """The stage's JSON object, reloaded on open (earlier parts' sections kept) and saved whole."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.data = read_json(self.path)

    def check(self, name: str, part: str = "") -> Check:
        return Check(self, name, part)

    def save(self) -> None:
        write_json(self.path, self.data)


def start(path: Path, stage: int, part: str, limit: float) -> None:
    """Create or extend the stage file with a part marked "started" before the part's process runs."""
    sf = StageFile(path)
    sf.data.setdefault("stage", stage)
    present = sorted(p.name for p in path.parent.iterdir() if p.is_file() and not p.name.startswith("."))
    sf.data.setdefault("parts", {})[part] = {
        "status": "started",
        "limit_s": limit,
        "started_at": now(),
        "files_present": present,
    }
    sf.data.setdefault("checks", {})
    sf.save()


def mark(path: Path, part: str, rc: int) -> str:
    """After a part's process ended with `rc`: its status, and that of any check it left running."""
    sf = StageFile(path)
    info = sf.data.setdefault("parts", {}).setdefault(part, {})
    if rc == 0:
        status = "done"
    elif rc in KILLED_RCS:
        status = "killed"
    elif rc == 1:
        status = "failed"  # the part ran to its end and found a problem
    else:
        status = "crashed"
    info.update(status=status, rc=rc, finished_at=now())
    for check in sf.data.get("checks", {}).values():
        if check.get("part") == part and check.get("status") in ("started", "running"):
            check["status"] = "killed" if rc in KILLED_RCS else "crashed"
    sf.save()
    return status


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="start / mark a part of a gpu_check stage file")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start")
    s.add_argument("file", type=Path)
    s.add_argument("--stage", type=int, required=True)
    s.add_argument("--part", required=True)
    s.add_argument("--limit", type=float, required=True)
    m = sub.add_parser("mark")
    m.add_argument("file", type=Path)
    m.add_argument("--part", required=True)
    m.add_argument("--rc", type=int, required=True)
    args = p.parse_args(argv)
    if args.cmd == "start":
        start(args.file, args.stage, args.part, args.limit)
    else:
        print(f"gpu_check: {args.file.name} part {args.part}: {mark(args.file, args.part, args.rc)} (rc {args.rc})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
