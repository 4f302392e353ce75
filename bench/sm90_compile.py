"""Compile every fused-op kernel DDA launches for an H100/H200 (sm_90) on a machine without a GPU.

Runs the launchers at the ResNet-34 / ResNet-50 stage shapes (batch 48; fp32, bf16, fp16; NCHW and
channels_last; attention_residual train/eval, channel_attention with and without scale/residual),
compiles each distinct specialization with Triton's ptxas and reports registers, spills, shared
memory, vector widths and resident warps per SM. Writes sm90_compile.json and sm90_compile.md.
These are compiler facts, not timings: they find compile errors and register spills before a GPU
run, and they explain tuning choices. `--check` exits 1 on a compile error or a spill in a kernel
that streams the N x C x H x W tensors.

Run from the source tree: PYTHONPATH=. python bench/sm90_compile.py [--quick] [--check] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.pop("TRITON_INTERPRET", None)  # interpreted kernels cannot be compiled
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import aot  # noqa: E402
from bench.benchutil import RESNET34_STAGES, RESNET50_STAGES  # noqa: E402
from ddakern.atomic import write_text as atomic_write  # noqa: E402
from ddakern.ops._common import triton_kernels  # noqa: E402

# kernels that read or write the N x C x H x W tensors: a spill there costs bandwidth at every element
STREAMING = {"_stats_partial_kernel", "_fwd_kernel", "_bwd_kernel", "_bwd_dx_kernel"}
QUICK_SHAPES = [(256, 56), (256, 14), (2048, 7), (64, 56)]  # main target, unaligned H*W, chunked, small C


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="output folder")
    p.add_argument("--quick", action="store_true", help="one shape per code path: bf16, and fp32 at the main shape")
    p.add_argument("--check", action="store_true", help="exit 1 on compile errors or spills in streaming kernels")
    p.add_argument(
        "--shapes", type=parse_shapes, default=None, metavar="CxS,...",
        help="with --quick: only these of its shapes (channels x side, e.g. 256x14)",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.shapes and not args.quick:
        p.error("--shapes needs --quick")
    return args


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """'256x14,64x56' -> [(256, 14), (64, 56)]: names of QUICK_SHAPES only."""
    known = {f"{c}x{s}": (c, s) for c, s in QUICK_SHAPES}
    unknown = [item for item in text.split(",") if item not in known]
    if unknown or not text:
        raise argparse.ArgumentTypeError(f"{','.join(unknown)!r} is not among the quick shapes {', '.join(known)}")
    return [known[item] for item in text.split(",")]


def quick_cases(batch: int = 48, shapes: list[tuple[int, int]] | None = None) -> list[aot.Case]:
    """One case per code path: main shape, unaligned H*W, chunked channels, small C; both layouts.

    bf16 (the training dtype on a GPU, where register pressure shows first) at every shape, fp32 at the
    main shape only: the fp32 specializations of the other shapes are in the full run.
    """
    out = []
    for c, s in shapes or QUICK_SHAPES:
        for dt in ("fp32", "bf16") if (c, s) == QUICK_SHAPES[0] else ("bf16",):
            for cl in (False, True):
                shape = (batch, c, s, s)
                out += [aot.Case("attention_residual", shape, dt, cl, v) for v in ("train", "eval")]
                out += [aot.Case("channel_attention", shape, dt, cl, v) for v in ("plain", "scale+residual")]
    return out


def problems(records: list[dict[str, Any]]) -> list[str]:
    """One line per compile error or streaming-kernel spill."""
    out = []
    for r in records:
        if "error" in r:
            out.append(f"{r['kernel']} {r['constants']} failed to compile ({r['cases'][0]}): {r['error']}")
        elif r["kernel"] in STREAMING and (r["stack_bytes"] or r["local_bytes"]):
            out.append(
                f"{r['kernel']} {r['constants']} spills ({r['registers']} registers, {r['stack_bytes']} B stack) "
                f"in {r['cases'][0]}"
            )
    return out


def markdown(records: list[dict[str, Any]]) -> str:
    t = triton_kernels("_common").tuning()
    lines = [
        "# Fused-op kernels compiled for sm_90 (H100/H200), offline",
        "",
        f"{len(records)} specializations compiled with Triton's ptxas, no GPU involved "
        f"(compiler facts, not timings). Tuning: tile {t.tile}, backward tile {t.bwd_tile or t.tile}, "
        f"max_block_c {t.max_block_c}, num_warps {t.num_warps}, target_programs {t.target_programs}.",
        "Warps/SM: resident warps per SM allowed by registers and shared memory (64 at most). SASS: static",
        "instruction count (loop bodies run many times).",
        "",
        "| kernel | blocks | dtype | first case | programs | regs | spill B | shared B | ld/st vec | warps/SM | SASS |",
        "|---|---|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in records:
        blocks = " ".join(f"{k}={v}" for k, v in r["constants"].items() if k.startswith(("BLOCK", "NUM_")))
        flags = " ".join(k for k, v in r["constants"].items() if v is True)
        case = r["cases"][0] + (f" (+{r['n_cases'] - 1})" if r["n_cases"] > 1 else "")
        dtype = ",".join(d.lstrip("*") for d in r["dtypes"])
        if "error" in r:
            lines.append(f"| {r['kernel']} | {blocks} {flags} | {dtype} | {case} | {r['programs']} | {r['error']} |")
            continue
        lines.append(
            f"| {r['kernel']} | {blocks} {flags} | {dtype} | {case} | {r['programs']} | {r['registers']} | "
            f"{r['stack_bytes']} | {r['shared_bytes']} | {r['load_vector']}/{r['store_vector']} | "
            f"{r['warps_per_sm']} | {r['sass_instructions']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cases = quick_cases(shapes=args.shapes) if args.quick else aot.dda_cases([*RESNET34_STAGES, *RESNET50_STAGES])
    t0 = time.perf_counter()
    records = aot.collect(cases)
    seconds = time.perf_counter() - t0
    found = problems(records)
    for r in records:  # keep the report readable: how many cases share a kernel, and the first few
        r["n_cases"], r["cases"] = len(r["cases"]), r["cases"][:3]
    stem = "sm90_compile_quick" if args.quick else "sm90_compile"
    summary = {"target": "cuda sm_90", "cases": len(cases), "specializations": len(records), "seconds": seconds}
    head = json.dumps({**summary, "problems": found}, indent=1)[:-2]
    body = ",\n".join(json.dumps(r) for r in records)  # one line per specialization
    atomic_write(args.out / f"{stem}.json", f'{head},\n "kernels": [\n{body}\n ]\n}}\n')
    atomic_write(args.out / f"{stem}.md", markdown(records))
    print(f"sm90_compile: {len(records)} specializations from {len(cases)} cases in {seconds:.0f} s; "
          f"{len(found)} problems; wrote {args.out / stem}.json/.md")  # fmt: skip
    for line in found:
        print("  " + line)
    return 1 if (args.check and found) else 0


if __name__ == "__main__":
    sys.exit(main())
