"""gpu_check stage 1: kernel correctness at every GPU configuration, each part its own process.

pytest    the kernel test files on CUDA (default budget: fp32/bf16/fp16, NCHW/channels_last, odd
          shapes; the tests' own small budgets force the chunked and split paths), outcomes saved
          after every test; tests that would start past the soft deadline are skipped and counted.
budget    real DDA shapes (small batch) under explicit block-size budgets (every Tuning field given):
          the GPU default, a chunked one (online softmax over channel chunks) and an unsplit one,
          across fp32/bf16/fp16 and NCHW/channels_last; each row records the chunks and splits the
          launchers chose and its worst error as a fraction of the project's allowance.
memcheck  compute-sanitizer memcheck of `memcheck-case` (every kernel once, odd small shapes, default
          and chunked budgets) with the caching allocator off, so an out-of-bounds access hits an
          allocation edge; skipped with a note where the tool is absent.

PYTHONPATH=. python3 bench/gpu_stage1.py {pytest,budget,memcheck} OUT/stage1.json [-- pytest args]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from gpucommon import ROOT, device, dry_run, error_line, loaded_modules, sanitizer

from bench.gpu_check import Case, check
from bench.stagefile import Check, StageFile
from ddakern.ops import registry
from ddakern.ops._common import triton_kernels

kcommon = triton_kernels("_common")
GPU_DEFAULT = {"tile": 4096, "max_block_c": 1024, "target_programs": 1024, "num_warps": 8, "bwd_tile": 2048,
               "bwd_num_warps": 0}  # fmt: skip
BUDGETS = {
    "gpu": {
        "default": GPU_DEFAULT,
        "chunked": {**GPU_DEFAULT, "tile": 1024, "max_block_c": 64},  # NCHW: 64-channel chunks; CL: 1024
        "unsplit": {**GPU_DEFAULT, "target_programs": 1},
    },
    "dry": {  # the same paths at the dry run's tiny shapes
        "default": GPU_DEFAULT,
        "chunked": {**GPU_DEFAULT, "tile": 64, "max_block_c": 8},
        "unsplit": {**GPU_DEFAULT, "target_programs": 1},
    },
}
# (dtype, channels_last, budget, channels, size): most used in training first; the deadline cuts the tail
ROWS = {
    "gpu": [  # the first three rows already cover every dtype, layout and budget once
        ("bf16", False, "default", 256, 56), ("fp32", True, "chunked", 2048, 7), ("fp16", False, "unsplit", 128, 28),
        ("bf16", True, "default", 512, 28), ("fp32", False, "default", 1024, 14), ("bf16", False, "chunked", 2048, 7),
        ("fp16", True, "default", 256, 14), ("bf16", False, "unsplit", 512, 7), ("fp32", True, "default", 64, 56),
        ("fp16", False, "chunked", 512, 28), ("bf16", True, "chunked", 1024, 14), ("fp16", False, "default", 64, 56),
    ],
    "dry": [("bf16", False, "default", 16, 6), ("fp32", True, "chunked", 19, 5), ("fp16", False, "unsplit", 12, 7)],
}  # fmt: skip
BATCH = {"gpu": 4, "dry": 2}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Recorder:
    """pytest plugin: saves every test outcome into the check; skips tests past the soft deadline."""

    def __init__(self, chk: Check) -> None:
        self.chk = chk
        self.counts = chk.data.setdefault("counts", {})
        self.failures = chk.data.setdefault("failures", [])

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if not self.chk.room_for_next():
            self.counts["skipped_deadline"] = self.counts.get("skipped_deadline", 0) + 1
            pytest.skip("gpu_check: soft deadline reached")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" and not (report.failed or report.skipped):
            return
        outcome = report.outcome if report.when == "call" or report.failed else "skipped"
        if report.failed and report.when != "call":
            outcome = "error"
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        if report.failed:
            text = str(report.longrepr).strip().splitlines()
            self.failures.append({"test": report.nodeid, "when": report.when, "tail": text[-6:]})
        self.chk.save()


def run_pytest(sf: StageFile, extra: list[str]) -> bool:
    chk = sf.check("pytest", part="pytest")
    files = [a for a in extra if not a.startswith("-")]
    chk.data["args"] = extra
    rec = Recorder(chk)
    rc = pytest.main(["-q", "-p", "no:cacheprovider", "-rfE", "--rootdir", str(ROOT), *extra], plugins=[rec])
    chk.data["pytest_rc"] = int(rc)
    print(f"stage1 pytest: {rec.counts} (files {files})", flush=True)
    return chk.finish(int(rc) in (0, 5) and not rec.failures and rec.counts.get("passed", 0) > 0)


def paths(op: str, c: int, s: int, n: int, channels_last: bool) -> dict[str, int]:
    """Blocks, channel chunks and position splits the op's forward launcher chooses for this map under the
    budget in force (each kernels module's `forward_blocks`)."""
    block_c, block_p, chunks = triton_kernels(op).forward_blocks(c, s * s, channels_last)
    _, splits = kcommon.split_range(s * s, block_p, n)
    return {"block_c": block_c, "block_p": block_p, "chunks": chunks, "splits": splits}


def budget_plan(mode: str) -> list[tuple[str, str, bool, str, int, int]]:
    """(op, dtype, channels_last, budget, channels, size) rows: each of ROWS for every registered op."""
    return [(op, *row) for row in ROWS[mode] for op in registry.names()]


def run_budget(sf: StageFile, dev: torch.device) -> bool:
    chk = sf.check("budget", part="budget")
    mode = "dry" if dry_run() else "gpu"
    n = BATCH[mode]
    rows = chk.data.setdefault("rows", [])
    chk.data["budgets"] = BUDGETS[mode]
    ok = True
    plan = budget_plan(mode)
    for i, (op, dname, cl, budget, c, s) in enumerate(plan):
        if not chk.room_for_next():
            chk.data["skipped_deadline"] = [f"{o} {d} {'CL' if l else 'NCHW'} {b} {cc}@{ss}"
                                            for o, d, l, b, cc, ss in plan[i:]]  # fmt: skip
            break
        row: dict[str, Any] = {"op": op, "dtype": dname, "layout": "channels_last" if cl else "NCHW",
                               "budget": budget, "shape": [n, c, s, s]}  # fmt: skip
        t0 = time.monotonic()
        try:
            with kcommon.tuned(**BUDGETS[mode][budget]):
                row["paths"] = paths(op, c, s, n, cl)
                res = check(Case(op, n, c, s, DTYPES[dname], dev, channels_last=cl), "triton")
            row.update(ok=res["ok"], worst_fraction_of_allowance=res["worst_fraction_of_allowance"],
                       errors=res["errors"])  # fmt: skip
        except Exception as exc:  # one failing configuration must not hide the others
            row.update(ok=False, error=error_line(exc))
        row["seconds"] = time.monotonic() - t0
        ok &= row["ok"]
        rows.append(row)
        chk.save()
        print(f"stage1 budget: {op} {dname} {row['layout']} {budget} {c}@{s}: ok={row['ok']} "
              f"{row.get('worst_fraction_of_allowance', float('nan')):.2f} of allowance {row.get('paths', '')}",
              flush=True)  # fmt: skip
    chk.data["modules"] = loaded_modules()
    return chk.finish(ok)


def memcheck_case() -> dict[str, Any]:
    """Every kernel once at odd small shapes (masked edges), default and chunked budgets, fp32 and bf16:
    the compute-sanitizer payload; returns each run's verdict."""
    dev = device()
    mode = "dry" if dry_run() else "gpu"
    n, c, s = (2, 9, 3) if mode == "dry" else (3, 67, 5)
    out = {}
    runs = (("default", "fp32", False), ("chunked", "bf16", True))
    for budget, dname, cl in runs[:1] if mode == "dry" else runs:  # dry run: the code path, cheaply
        for op in registry.names():
            with kcommon.tuned(**BUDGETS[mode][budget]):
                res = check(Case(op, n, c, s, DTYPES[dname], dev, channels_last=cl), "triton")
            out[f"{op} {dname} {budget}"] = res["ok"]
    return out


def run_memcheck(sf: StageFile) -> bool:
    chk = sf.check("memcheck", part="memcheck")
    tool = sanitizer()
    chk.data["tool"] = tool
    if tool is None:
        chk.data["note"] = "compute-sanitizer not found (PATH, /usr/local/cuda*/bin): memcheck skipped"
        if dry_run():  # still run the payload once, so its code is tried
            chk.data["case"] = memcheck_case()
        print("stage1 memcheck: " + chk.data["note"], flush=True)
        return chk.finish(True, status="skipped")
    cmd = [tool, "--tool", "memcheck", "--error-exitcode", "7", "--report-api-errors", "no", "--print-limit", "20",
           sys.executable, str(Path(__file__).resolve()), "memcheck-case"]  # fmt: skip
    env = {**os.environ, "PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}
    chk.data["command"] = " ".join(cmd)
    chk.save()
    left = chk.left()
    try:  # in its own process group: on a timeout the python it runs is killed too, not left on the GPU
        rc, stdout, stderr = chk.run(cmd, env, timeout=None if left == float("inf") else max(left, 5))
    except subprocess.TimeoutExpired as exc:
        tail = str(exc.stdout or "")[-3000:]
        chk.data.update(note="memcheck ran past the soft deadline", tail=tail)
        return chk.finish(False, status="timeout")
    text = stdout + stderr
    m = re.search(r"ERROR SUMMARY: (\d+) error", text)
    case = re.search(r"^MEMCHECK_CASE (\{.*\})$", stdout, re.M)
    chk.data.update(rc=rc, errors=int(m.group(1)) if m else None, tail=text[-3000:].splitlines(),
                    case=json.loads(case.group(1)) if case else None)  # fmt: skip
    ok = rc == 0 and m is not None and int(m.group(1)) == 0 and case is not None
    print(f"stage1 memcheck: rc={rc} errors={chk.data['errors']}", flush=True)
    return chk.finish(ok)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=("pytest", "budget", "memcheck", "memcheck-case"))
    p.add_argument("stage_file", type=Path, nargs="?")
    args = p.parse_args(argv)
    if args.part == "memcheck-case":
        print("MEMCHECK_CASE " + json.dumps(memcheck_case()), flush=True)
        return 0
    if args.stage_file is None:
        p.error("stage_file is required")
    sf = StageFile(args.stage_file)
    if args.part == "pytest":
        ok = run_pytest(sf, extra)
    elif args.part == "budget":
        ok = run_budget(sf, device())
    else:
        ok = run_memcheck(sf)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
