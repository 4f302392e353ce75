"""Whole-step time and saved bytes of every variant, rounds interleaved, as ratios to eager.

pytest-benchmark times each variant's rounds back to back, so a load change on a shared machine
between two variants shows up as a speed ratio. Here round r runs every variant once before round
r + 1 starts; the ratios use each variant's minimum (and median) over the rounds of the same run.

    python bench/step_ratios.py --model resnet34_dda --batch 4 --image-size 96 --rounds 7 \\
        --out bench/results/step_ratios_cpu_resnet34_dda.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from ddakern import atomic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import VARIANTS, make_step  # noqa: E402  (bench/ is not a package)

DEFAULT_VARIANTS = ("eager", "fused", "recompute-dda", "fused+recompute-dda", "recompute-all", "channels_last")


def measure(model: str, batch: int, image_size: int, rounds: int, variants: list[str]) -> dict:
    steps = {v: make_step(model, VARIANTS[v], batch, image_size) for v in variants}
    saved = {v: s[1]() for v, s in steps.items()}
    for step, _, _ in steps.values():
        step()  # warm-up
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for v, (step, _, _) in steps.items():
            t = time.perf_counter()
            step()
            times[v].append(time.perf_counter() - t)
    base_min, base_med = min(times["eager"]), statistics.median(times["eager"])
    rows = {
        v: {
            "min_s": min(t), "median_s": statistics.median(t), "time_ratio_min": min(t) / base_min,
            "time_ratio_median": statistics.median(t) / base_med, "images_per_s": batch / min(t),
            "saved_MiB": saved[v] / 2**20, "saved_ratio": saved[v] / saved["eager"], "times_s": t,
        }
        for v, t in times.items()
    }  # fmt: skip
    return {
        "model": model, "batch": batch, "image_size": image_size, "rounds": rounds, "dtype": "fp32",
        "device": str(next(iter(steps.values()))[2].fc.weight.device), "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
        "load_average": os.getloadavg(), "variants": rows,
    }  # fmt: skip


def table(result: dict) -> str:
    lines = [
        f"{result['model']}, batch {result['batch']} at {result['image_size']} px, {result['rounds']} interleaved "
        f"rounds, {result['threads']} threads, {result['device']}",
        "| variant | step s (min) | time ratio (min / median) | images/s | saved MiB | saved ratio |",
        "|---|---|---|---|---|---|",
    ]
    for v, r in result["variants"].items():
        lines.append(
            f"| {v} | {r['min_s']:.3f} | {r['time_ratio_min']:.2f}x / {r['time_ratio_median']:.2f}x | "
            f"{r['images_per_s']:.1f} | {r['saved_MiB']:.1f} | {r['saved_ratio']:.3f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet34_dda")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="comma-separated; eager is always run")
    p.add_argument("--out", type=Path, help="JSON file for the results")
    args = p.parse_args()
    if args.batch < 2:
        p.error("--batch must be at least 2: training batch norm needs 2 values per channel (DDA's gates are 1x1)")
    variants = ["eager"] + [v for v in args.variants.split(",") if v and v != "eager"]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    result = measure(args.model, args.batch, args.image_size, args.rounds, variants)
    print(table(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(args.out, json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
