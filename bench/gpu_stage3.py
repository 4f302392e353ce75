"""gpu_check stage 3: the whole training step, bf16 autocast, batch 48 at 224 px, for resnet34_dda and
resnet50_dda: images/s and peak memory (torch.cuda.max_memory_allocated over the timed steps) per variant.

Two parts, each its own process under its own timeout: `steps` (eager, fused, recompute-dda) and
`compile` (torch.compile of the eager model: ~40-90 s of compiling per model, so it comes last and alone).
Each row is saved as soon as it is measured; one failing row (an OOM, a compile error) is recorded and
the next goes on. Dry run: batch 2 at 64 px, fp32, the torch backend for fused ops (the shell passes
--models resnet18_dda: the same DDA blocks at a third of the CPU time).

    PYTHONPATH=. python3 bench/gpu_stage3.py {steps,compile} OUT/stage3.json
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from gpucommon import device, dry_run, error_line, loaded_modules, peak_bytes, peak_reset, release, sync

from bench.benchutil import VARIANTS, make_step
from bench.stagefile import StageFile
from ddakern.dispatch import use_ops_backend

MODELS = ("resnet34_dda", "resnet50_dda")
PARTS = {"steps": ("eager", "fused", "recompute-dda"), "compile": ("compile",)}
# the first compile row's expected length (10 s of imports are already spent): torch.compile of a DDA step takes
# 40-90 s on an H200 (header of gpu_check.sh); with less left the row is skipped, not killed mid-way
COMPILE_ROW_GUESS_S = 50.0
SIZE = {"gpu": {"batch": 48, "image_size": 224, "steps": 10}, "dry": {"batch": 2, "image_size": 64, "steps": 1}}


def measure(name: str, variant: str, dev: torch.device, size: dict[str, int], left: Any) -> dict[str, Any]:
    """Warm-up step (compiles), then up to size["steps"] timed steps while `left()` > 0."""
    row: dict[str, Any] = {"model": name, "variant": variant}
    backend = "torch" if dry_run() else "auto"  # dry run: the interpreter would take minutes per step
    with use_ops_backend(backend):
        t0 = time.monotonic()
        step, _, _ = make_step(name, VARIANTS[variant], size["batch"], size["image_size"], dev)
        losses = [float(step())]
        row["warmup_s"] = time.monotonic() - t0
        peak_reset(dev)
        times = []
        for _ in range(size["steps"]):
            if times and left() < 0:
                row["note"] = "soft deadline: fewer timed steps"
                break
            sync(dev)
            t = time.perf_counter()
            losses.append(float(step()))
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    row.update(
        steps=len(times),
        step_ms_median=1e3 * med,
        step_ms_min=1e3 * min(times),
        images_per_s=size["batch"] / med,
        peak_memory_bytes=peak_bytes(dev),
        loss_first_last=[losses[0], losses[-1]],
        ok=all(math.isfinite(v) and 0 < v < 20 for v in losses),
    )
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=tuple(PARTS))
    p.add_argument("stage_file", type=Path)
    p.add_argument("--models", default=",".join(MODELS))
    args = p.parse_args(argv)
    dev = device()
    size = SIZE["dry" if dry_run() else "gpu"]
    chk = StageFile(args.stage_file).check(args.part, part=args.part)
    chk.data.update(amp="bf16" if dev.type == "cuda" else "none", **size)
    rows = chk.data.setdefault("rows", [])
    plan = [(m, v) for m in args.models.split(",") for v in PARTS[args.part]]
    if dry_run():  # CI: eager and fused rows try the code; Inductor on a small CPU takes minutes (GPU only)
        plan = plan[:1] if args.part == "compile" else [(m, v) for m, v in plan if v != "recompute-dda"]
    ok = True
    first_guess = 0.0 if dry_run() or args.part != "compile" else COMPILE_ROW_GUESS_S
    for i, (name, variant) in enumerate(plan):
        if not chk.room_for_next(first_guess):
            chk.data["skipped_deadline"] = [f"{m} {v}" for m, v in plan[i:]]
            break
        try:
            row = measure(name, variant, dev, size, chk.left)
        except Exception as exc:  # an OOM or compile error in one row must not lose the others
            row = {"model": name, "variant": variant, "ok": False, "error": error_line(exc)}
        release(dev)
        ok &= row["ok"]
        rows.append(row)
        chk.save()
        print(f"stage3 {name} {variant}: {row.get('images_per_s', float('nan')):.1f} img/s, peak "
              f"{(row.get('peak_memory_bytes') or 0) / 2**30:.2f} GiB {row.get('error', '')}", flush=True)  # fmt: skip
    chk.data["modules"] = loaded_modules()
    return 0 if chk.finish(ok) else 1


if __name__ == "__main__":
    raise SystemExit(main())
