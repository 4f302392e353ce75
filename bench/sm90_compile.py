"""Compile every fused-op kernel DDA launches for an H100/H200 (sm_90) on a machine without a GPU.

The full run finds the fused-op calls by running every DDA model (bench/aot_trace.py: resnet18/34/50/
101_dda on fake tensors; training and evaluation at batch 48 with fp32 / bf16 / fp16 autocast, NCHW and
channels_last; prediction at batches 32 and 1; Grad-CAM), replays each distinct call on the launchers
with the launches captured (bench/aot.py), compiles each distinct specialization with Triton's ptxas
and reports registers, spills, shared memory, vector widths and resident warps per SM, once per Triton:
the project's, and each `--triton DIR` (e.g. the GPU machine's 3.6.0, installed with
`pip install --target DIR --no-deps triton==3.6.0`), each in its own process with DIR first on the
path. Writes sm90_compile.json and sm90_compile.md. `--quick` (the CI test) compiles a few hand-picked
cases with the project's Triton only (sm90_compile_quick.*).
These are compiler facts, not timings: they find compile errors and register spills before a GPU
run, and they explain tuning choices. `--check` exits 1 on a compile error or a spill in a kernel
that streams the N x C x H x W tensors.

Run from the source tree: PYTHONPATH=. python bench/sm90_compile.py [--quick] [--check] [--triton DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # interpreted kernels cannot be compiled; as a module (tests) the env is left alone
    os.environ.pop("TRITON_INTERPRET", None)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import aot, aot_trace  # noqa: E402
from ddakern.atomic import write_text as atomic_write  # noqa: E402
from ddakern.ops import registry  # noqa: E402
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
        "--triton", type=Path, action="append", default=[], metavar="DIR",
        help="full run: also compile with the triton package installed under DIR",
    )  # fmt: skip
    p.add_argument("--replay", type=Path, default=None, help=argparse.SUPPRESS)  # internal: one Triton's compile
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
    """One case per code path: main shape, unaligned H*W, chunked channels, small C; both layouts; every
    registered op in each of its variants.

    bf16 (the training dtype on a GPU, where register pressure shows first) at every shape, fp32 at the
    main shape only: the fp32 specializations of the other shapes are in the full run.
    """
    out = []
    for c, s in shapes or QUICK_SHAPES:
        for dt in ("fp32", "bf16") if (c, s) == QUICK_SHAPES[0] else ("bf16",):
            for cl in (False, True):
                shape = (batch, c, s, s)
                out += [aot.Case(spec.name, shape, dt, cl, v) for spec in registry.ops() for v in spec.variants]
    return out


def problem(kernel: str, constants: Any, usage: dict[str, Any], where: str) -> str | None:
    """The line for a compile error or a streaming-kernel spill of one compiled kernel, else None."""
    if "error" in usage:
        return f"{kernel} {constants} failed to compile ({where}): {usage['error']}"
    if kernel in STREAMING and spilled(usage):
        regs, stack = usage["registers"], usage["stack_bytes"]
        return f"{kernel} {constants} spills ({regs} registers, {stack} B stack) in {where}"
    return None


def problems(records: list[dict[str, Any]]) -> list[str]:
    """One line per compile error or streaming-kernel spill."""
    found = (problem(r["kernel"], r["constants"], r, r["cases"][0]) for r in records)
    return [line for line in found if line]


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


class Traced:
    """One distinct traced call as a compile case (named by the call itself)."""

    def __init__(self, call: aot_trace.Call) -> None:
        self.call = call

    def __str__(self) -> str:
        return str(self.call)

    def launch(self) -> None:
        aot_trace.replay(self.call)


USAGE = ("registers", "stack_bytes", "local_bytes", "shared_bytes", "load_vector", "store_vector", "warps_per_sm")


def replay_main(calls_file: Path, out: Path) -> int:
    """Compile the calls in `calls_file` with the triton this process imports; write its records to `out`."""
    import triton

    calls = [aot_trace.Call.from_json(item) for item in json.loads(calls_file.read_text())]
    t0 = time.perf_counter()
    records = aot.collect([Traced(c) for c in calls])
    seconds = time.perf_counter() - t0
    for r in records:
        r["n_cases"], r["cases"] = len(r["cases"]), r["cases"][:1]
    atomic_write(out, json.dumps({"triton": triton.__version__, "seconds": seconds, "kernels": records}))
    return 0


def compile_with(site: Path | None, calls_file: Path, out: Path) -> dict[str, Any]:
    """Run the replay in a child process with the triton under `site` (None: the project's) first on the path."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([*([str(site)] if site else []), str(ROOT)])
    if site:  # a separate cache: the cache key does not tell the Triton versions' compilers apart everywhere
        env["TRITON_CACHE_DIR"] = str(out.parent / "cache")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--replay", str(calls_file), "--out", str(out)]
    subprocess.run(cmd, env=env, cwd=ROOT, check=True)
    return json.loads(out.read_text())


def merge(parts: list[dict[str, Any]], where: dict[str, list[str]]) -> list[dict[str, Any]]:
    """One record per specialization of the first Triton, with each Triton's resource usage under
    `triton[version]` (matched by the record id: the same launch of the same call)."""
    merged = []
    by_id = [{r["id"]: r for r in part["kernels"]} for part in parts]
    for r in parts[0]["kernels"]:
        call = r["cases"][0]
        runs = where[call]
        rec = {k: r[k] for k in ("kernel", "constants", "dtypes", "num_warps", "programs")}
        rec.update(call=call, run=runs[0], n_calls=r["n_cases"], sass_instructions=r.get("sass_instructions"))
        rec["triton"] = {}
        for part, ids in zip(parts, by_id, strict=True):
            other = ids.get(r["id"])
            if other is None or other["kernel"] != r["kernel"]:
                rec["triton"][part["triton"]] = {"error": "no matching specialization"}
            elif "error" in other:
                rec["triton"][part["triton"]] = {"error": other["error"]}
            else:
                rec["triton"][part["triton"]] = {k: other[k] for k in USAGE}
        merged.append(rec)
    return merged


def full_problems(records: list[dict[str, Any]]) -> list[str]:
    """Compile errors and streaming-kernel spills, per Triton version."""
    found = (
        (version, problem(r["kernel"], r["constants"], u, f"{r['call']} ({r['run']})"))
        for r in records
        for version, u in r["triton"].items()
    )
    return [f"triton {version}: {line}" for version, line in found if line]


def spilled(u: dict[str, Any]) -> bool:
    return "error" not in u and bool(u["stack_bytes"] or u["local_bytes"])


def full_markdown(summary: dict[str, Any], records: list[dict[str, Any]]) -> str:
    t = triton_kernels("_common").tuning()
    versions = list(summary["triton"])
    lines = [
        "# Fused-op kernels compiled for sm_90 (H100/H200), offline: what training, evaluation and prediction launch",
        "",
        f"{summary['runs']} runs traced (bench/aot_trace.py: {', '.join(aot_trace.DDA_MODELS)}; training and "
        "evaluation at batch 48 with fp32 / bf16 / fp16 autocast, NCHW and channels_last; prediction at batches "
        f"32 and 1; Grad-CAM) in {summary['trace_seconds']:.0f} s: {summary['calls']} distinct fused-op calls, "
        f"{len(records)} distinct kernel specializations, each compiled with Triton's ptxas per Triton version "
        "(compiler facts, not timings; no GPU involved).",
        f"Tuning: tile {t.tile}, backward tile {t.bwd_tile or t.tile}, max_block_c {t.max_block_c}, "
        f"num_warps {t.num_warps}, target_programs {t.target_programs}.",
        "",
        "| triton | specializations | compile s | with spills | spills in streaming kernels | compile errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for v in versions:
        s = summary["triton"][v]
        lines.append(
            f"| {v} | {s['specializations']} | {s['seconds']:.0f} | {s['spilling']} | {s['streaming_spills']} "
            f"| {s['errors']} |"
        )
    spills = [(r, v) for r in records for v in versions if spilled(r["triton"][v])]
    lines += ["", "## Spills", ""]
    if not spills:
        lines.append("None: no specialization spills registers with any Triton version.")
    else:
        lines += [
            "| triton | kernel | blocks | dtype | call (first run) | regs | spill B |",
            "|---|---|---|---|---|---:|---:|",
        ]
        for r, v in spills:
            u = r["triton"][v]
            lines.append(
                f"| {v} | {r['kernel']} | {_blocks(r)} | {_dtype(r)} | {r['call']} ({r['run']}) | {u['registers']} "
                f"| {u['stack_bytes']} |"
            )
    head = " | ".join(f"{v} regs | {v} spill B | {v} shared B | {v} warps/SM" for v in versions)
    lines += [
        "",
        "## Every specialization",
        "",
        "Warps/SM: resident warps per SM allowed by registers and shared memory (64 at most). SASS: static",
        f"instruction count with triton {versions[0]} (loop bodies run many times). Call: the first call that",
        "launches it (tensor arguments as shape:dtype[:nhwc]), with the first run that makes that call and the",
        "number of distinct calls that launch the same specialization.",
        "",
        f"| kernel | blocks | dtype | call (first run) | calls | programs | {head} | ld/st vec | SASS |",
        "|---|---|---|---|---:|---:|" + "---:|" * (4 * len(versions)) + "---|---:|",
    ]
    for r in records:
        cells = []
        for v in versions:
            u = r["triton"][v]
            if "error" in u:
                cells += [u["error"], "", "", ""]
            else:
                cells += [str(u["registers"]), str(u["stack_bytes"]), str(u["shared_bytes"]), str(u["warps_per_sm"])]
        first = r["triton"][versions[0]]
        vec = f"{first['load_vector']}/{first['store_vector']}" if "error" not in first else ""
        lines.append(
            f"| {r['kernel']} | {_blocks(r)} | {_dtype(r)} | {r['call']} ({r['run']}) | {r['n_calls']} | "
            f"{r['programs']} | {' | '.join(cells)} | {vec} | {r['sass_instructions']} |"
        )
    return "\n".join(lines) + "\n"


def _blocks(r: dict[str, Any]) -> str:
    blocks = " ".join(f"{k}={v}" for k, v in r["constants"].items() if k.startswith(("BLOCK", "NUM_", "POS")))
    flags = " ".join(k for k, v in r["constants"].items() if v is True)
    return f"{blocks} {flags}".strip()


def _dtype(r: dict[str, Any]) -> str:
    return ",".join(d.lstrip("*") for d in r["dtypes"])


def full_main(args: argparse.Namespace) -> int:
    """Trace every run, compile the distinct calls with each Triton, write sm90_compile.json / .md."""
    t0 = time.perf_counter()
    runs = aot_trace.runs()
    calls, where_calls = aot_trace.unique_calls(runs)
    trace_seconds = time.perf_counter() - t0
    where = {str(c): w for c, w in where_calls.items()}
    print(f"sm90_compile: {len(runs)} runs traced in {trace_seconds:.0f} s: {len(calls)} distinct calls")
    with tempfile.TemporaryDirectory() as tmp:
        calls_file = Path(tmp) / "calls.json"
        calls_file.write_text(json.dumps([c.to_json() for c in calls]))
        parts = []
        for k, site in enumerate([None, *args.triton]):
            (Path(tmp) / f"t{k}").mkdir()
            parts.append(compile_with(site, calls_file, Path(tmp) / f"t{k}" / "records.json"))
            print(f"  triton {parts[-1]['triton']}: {len(parts[-1]['kernels'])} specializations "
                  f"in {parts[-1]['seconds']:.0f} s")  # fmt: skip
    records = merge(parts, where)
    found = full_problems(records)
    summary: dict[str, Any] = {
        "target": "cuda sm_90",
        "runs": len(runs),
        "calls": len(calls),
        "specializations": len(records),
        "trace_seconds": trace_seconds,
        "seconds": time.perf_counter() - t0,
        "triton": {},
    }
    for part in parts:
        v = part["triton"]
        usage = [r["triton"][v] for r in records]
        summary["triton"][v] = {
            "specializations": len(part["kernels"]),
            "seconds": part["seconds"],
            "spilling": sum(spilled(u) for u in usage),
            "streaming_spills": sum(
                spilled(u) for u, r in zip(usage, records, strict=True) if r["kernel"] in STREAMING
            ),
            "errors": sum("error" in u for u in usage),
        }
    head = json.dumps({**summary, "run_list": [str(r) for r in runs], "problems": found}, indent=1)[:-2]
    body = ",\n".join(json.dumps(r) for r in records)
    atomic_write(args.out / "sm90_compile.json", f'{head},\n "kernels": [\n{body}\n ]\n}}\n')
    atomic_write(args.out / "sm90_compile.md", full_markdown(summary, records))
    print(f"sm90_compile: {len(records)} specializations, {summary['seconds']:.0f} s in all; {len(found)} problems; "
          f"wrote {args.out / 'sm90_compile'}.json/.md")  # fmt: skip
    for line in found:
        print("  " + line)
    return 1 if (args.check and found) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replay is not None:
        return replay_main(args.replay, args.out)
    if not args.quick:
        return full_main(args)
    cases = quick_cases(shapes=args.shapes)
    t0 = time.perf_counter()
    records = aot.collect(cases)
    seconds = time.perf_counter() - t0
    found = problems(records)
    for r in records:  # keep the report readable: how many cases share a kernel, and the first few
        r["n_cases"], r["cases"] = len(r["cases"]), r["cases"][:3]
    stem = "sm90_compile_quick"
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
