"""gpu_check.md from the stage files in a folder (standard library only: the shell runs it after every
part, in milliseconds). Missing or partial stages are shown as such, so the summary is always current.

    python3 bench/gpu_summary.py OUT
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from stagefile import read_json, write_text

STAGES = {
    0: "environment, fused ops at one real shape, fused resnet34_dda bf16 steps",
    1: "kernel correctness at every GPU configuration",
    2: "fused op timings (eager, torch.compile, fused)",
    3: "whole training step, bf16, batch 48 at 224 px",
}


def _f(v: Any, fmt: str = ".2f") -> str:
    return format(v, fmt) if isinstance(v, (int, float)) else "-"


def _gib(v: Any) -> str:
    return f"{v / 2**30:.2f}" if isinstance(v, (int, float)) else "-"


def stage0(checks: dict[str, Any]) -> list[str]:
    env = checks.get("env", {})
    keys = ("gpu", "capability", "sms", "gpu_memory_gib", "torch", "torch_cuda", "triton", "python", "cudnn",
            "device", "compute_sanitizer")  # fmt: skip
    out = [", ".join(f"{k} {env[k]}" for k in keys if env.get(k) is not None)]
    if env.get("nvidia_smi"):
        out.append("nvidia-smi: " + ", ".join(f"{k} {v}" for k, v in env["nvidia_smi"].items()))
    out += ["", "| op | shape | dtype | ok | worst error / allowance |", "|---|---|---|---|---|"]
    for r in checks.get("ops", {}).get("rows", []):
        shape = "x".join(map(str, r["shape"]))
        worst = r.get("error") or _f(r.get("worst_fraction_of_allowance"))
        out.append(f"| {r['op']} | {shape} | {r['dtype']} | {'yes' if r['ok'] else 'NO'} | {worst} |")
    st = checks.get("step", {})
    if st:
        size = f"batch {st.get('batch')} at {st.get('image_size')} px"
        out += ["", f"{st.get('model')} fused step ({st.get('amp')}, {size}): "
                f"{_f(st.get('images_per_s'), '.1f')} img/s, peak {_gib(st.get('peak_memory_bytes'))} GiB, "
                f"warm-up {_f(st.get('warmup_s'), '.1f')} s, status {st.get('status')}"]  # fmt: skip
        if st.get("error"):
            out.append(f"error: {st['error']}")
    return out


def stage1(checks: dict[str, Any]) -> list[str]:
    out = []
    pt = checks.get("pytest")
    if pt:
        out.append(f"pytest ({pt.get('status')}): {pt.get('counts', {})}")
        out += [f"- FAILED {f['test']}: {' / '.join(f['tail'][-2:])}" for f in pt.get("failures", [])[:20]]
    bud = checks.get("budget")
    if bud:
        out += ["", f"Block-size budgets ({bud.get('status')}):", "",
                "| op | dtype | layout | budget | shape | chunks | splits | ok | worst error / allowance |",
                "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in bud.get("rows", []):
            pth = r.get("paths", {})
            worst = r.get("error") or _f(r.get("worst_fraction_of_allowance"))
            shape = "x".join(map(str, r["shape"]))
            ok = "yes" if r["ok"] else "NO"
            out.append(f"| {r['op']} | {r['dtype']} | {r['layout']} | {r['budget']} | {shape} "
                       f"| {pth.get('chunks', '-')} | {pth.get('splits', '-')} | {ok} | {worst} |")  # fmt: skip
        if bud.get("skipped_deadline"):
            out.append(f"skipped at the deadline: {'; '.join(bud['skipped_deadline'])}")
    mc = checks.get("memcheck")
    if mc:
        line = f"compute-sanitizer memcheck ({mc.get('status')}): errors {mc.get('errors', '-')}"
        out += ["", line + (f"; {mc['note']}" if mc.get("note") else "")]
    return out


def stage2(checks: dict[str, Any]) -> list[str]:
    ops = checks.get("ops", {})
    out = [f"status {ops.get('status', '-')}"]
    if ops.get("markdown"):
        out += ["", ops["markdown"].replace("\n# ", "\n### ").lstrip("# ").rstrip()]
    skipped = ops.get("report", {}).get("skipped_rows")
    if skipped:
        out.append(f"\nskipped at the deadline: {'; '.join(skipped)}")
    return out


def stage3(checks: dict[str, Any]) -> list[str]:
    out = ["| model | variant | img/s | step ms (median) | peak GiB | warm-up s | ok |", "|---" * 7 + "|"]
    for part in ("steps", "compile"):
        for r in checks.get(part, {}).get("rows", []):
            ok = "yes" if r.get("ok") else f"NO {r.get('error', '')}"
            out.append(f"| {r['model']} | {r['variant']} | {_f(r.get('images_per_s'), '.1f')} | "
                       f"{_f(r.get('step_ms_median'), '.1f')} | {_gib(r.get('peak_memory_bytes'))} | "
                       f"{_f(r.get('warmup_s'), '.1f')} | {ok} |")  # fmt: skip
        for s in checks.get(part, {}).get("skipped_deadline", []):
            out.append(f"| {s} | skipped at the deadline | | | | | |")
    return out


def summary(folder: Path) -> str:
    lines = ["# gpu_check (bench/gpu_check.sh)", ""]
    for n, title in STAGES.items():
        data = read_json(folder / f"stage{n}.json")
        lines += [f"## Stage {n}: {title}", ""]
        if not data:
            lines += ["not run (or not started before the run ended)", ""]
            continue
        parts = data.get("parts", {})
        lines.append("parts: " + ", ".join(f"{p} {i.get('status')} (limit {_f(i.get('limit_s'), '.0f')} s)"
                                           for p, i in parts.items()))  # fmt: skip
        checks = data.get("checks", {})
        lines.append("checks: " + ", ".join(f"{c} {i.get('status')} in {_f(i.get('elapsed_s'), '.1f')} s"
                                            for c, i in checks.items()))  # fmt: skip
        lines.append("")
        lines += (stage0, stage1, stage2, stage3)[n](checks)
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else Path("bench/results")
    write_text(folder / "gpu_check.md", summary(folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
