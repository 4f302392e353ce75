"""Correctness and speed of the fused DDA ops at real DDA shapes (one H200 run; CPU --dry-run for tests).

For each host (ResNet-34 / ResNet-50 stage outputs), dtype (fp32, bf16) and registered op
(ddakern.ops.registry, in its checked variant: attention_residual in training mode, channel_attention
with scale and residual) it checks the fused op (forward and every
gradient) against the autograd reference, and times fused vs eager reference vs torch.compile of the
reference, forward and forward+backward (medians via triton.testing.do_bench on CUDA). Achieved GB/s
counts the minimum traffic (each input read once, each output written once) against a measured
device copy. Writes gpu_check.json and gpu_check.md into --out (default $OUT or bench/results), after
every row; with --stage-file (bench/gpu_check.sh's stage 2) the report goes, with its markdown, into
that stage file's check "ops" instead. Rows first (headline first), the tuning sweep last; past
--deadline-s the remaining rows and budgets are listed as skipped.

Run from the source tree: PYTHONPATH=. python bench/gpu_check.py [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchutil import RESNET34_STAGES, RESNET50_STAGES  # noqa: E402
from bench.gpucommon import error_line  # noqa: E402
from bench.stagefile import StageFile, soft_deadline_left  # noqa: E402
from ddakern.atomic import write_text as atomic_write  # noqa: E402
from ddakern.dispatch import use_ops_backend  # noqa: E402
from ddakern.ops import registry  # noqa: E402
from ddakern.ops._common import triton_kernels  # noqa: E402

HOSTS = {"resnet34": list(RESNET34_STAGES), "resnet50": list(RESNET50_STAGES)}
DRY_HOSTS = {"resnet34": [(4, 6), (8, 3)], "resnet50": [(8, 6), (16, 3)]}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# the target case (ResNet-50 stage 1, bf16), measured first so no deadline can skip it
HEADLINE = {"op": "attention_residual", "host": "resnet50", "stage": 0, "dtype": "bf16"}
TARGETS = {"vs_eager": 2.5, "vs_compiled": 1.3, "copy_fraction": 0.70}  # fwd+bwd, at least
# block-size budgets tried on the headline case (ddakern.kernels._common.Tuning fields); {} is the default
SWEEP: list[dict[str, int]] = [
    {},
    {"tile": 8192},
    {"tile": 2048, "num_warps": 4},
    {"bwd_tile": 4096},
    {"bwd_tile": 1024, "num_warps": 4},
    {"tile": 8192, "bwd_tile": 4096, "num_warps": 16},
    {"target_programs": 512},
    {"target_programs": 4096},
    {"num_warps": 4},
    {"max_block_c": 64},  # NCHW: 64-channel chunks x 64 positions (online softmax), 128-byte rows
    # fewest SASS instructions per element at the headline shape offline (33 fwd, 71 + 39 bwd), but its
    # backward spills at 1024@14: run bench/sm90_compile.py --check before making it a default
    {"tile": 8192, "bwd_num_warps": 4},
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "bench/results"), help="output folder")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, torch backend, no torch.compile")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 48; 2 with --dry-run)")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma list of fp32,bf16,fp16 (in this order)")
    p.add_argument("--hosts", default="resnet34,resnet50", help="comma list of resnet34,resnet50")
    p.add_argument("--backend", default=None, help="fused backend (default triton on CUDA, torch with --dry-run)")
    p.add_argument("--compile", dest="compile", action="store_true", default=None, help="time torch.compile")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile timings")
    p.add_argument("--no-sweep", dest="sweep", action="store_false", help="skip the tuning sweep")
    p.add_argument("--rep-ms", type=int, default=60, help="do_bench measurement time per timing (ms)")
    p.add_argument("--deadline-s", type=float, default=330.0, help="skip remaining timings after this many s")
    p.add_argument("--stage-file", type=Path, default=None, help="write into this gpu_check.sh stage file instead")
    return p.parse_args(argv)


def bench_ms(fn: Callable[[], Any], device: torch.device, rep_ms: int, grads: list[torch.Tensor]) -> float:
    """Median milliseconds of fn (CUDA: triton.testing.do_bench; CPU: perf_counter over a few calls)."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=max(rep_ms // 4, 5), rep=rep_ms, grad_to_none=grads, return_mode="median"))
    times = []
    for _ in range(5):
        for g in grads:
            g.grad = None
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def copy_gbps(device: torch.device, rep_ms: int) -> float:
    """Measured device copy bandwidth (read + write bytes per second) of a large tensor."""
    numel = (1 << 28) if device.type == "cuda" else (1 << 22)
    a = torch.randn(numel, device=device)
    b = torch.empty_like(a)
    ms = bench_ms(lambda: b.copy_(a), device, rep_ms, [])
    return 2 * a.numel() * a.element_size() / ms / 1e6


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.double()
    return ((a.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


class Case:
    """Inputs and callables of one (op, shape, dtype): the op's registered example (ddakern.ops.registry),
    its checked variant (attention_residual in training mode, channel_attention with scale and residual)."""

    def __init__(
        self, op: str, n: int, c: int, s: int, dtype: torch.dtype, device: torch.device, channels_last: bool = False
    ) -> None:
        self.op, self.dtype = op, dtype
        self.spec = registry.get(op)
        self.example = self.spec.example((n, c, s, s), dtype, device, channels_last=channels_last, seed=113 + c + s)
        self.x, self.grad, self.leaves = self.example.tensors["x"], self.example.grad, self.example.leaves
        # minimum traffic: every input read once, the output written; bwd adds dy, the inputs again, the grads
        self.bytes_fwd = self.example.min_bytes("fwd")
        self.bytes_fwd_bwd = self.example.min_bytes("fwd+bwd")

    def call(self, fn: Callable[..., torch.Tensor], leaves: list[torch.Tensor]) -> torch.Tensor:
        return self.example.run(fn, leaves)

    def fused(self) -> Callable[..., torch.Tensor]:
        return self.spec.fused

    def ref(self) -> Callable[..., torch.Tensor]:
        return self.spec.reference


def grads_of(example: registry.Example, fn: Callable[..., torch.Tensor]) -> list[torch.Tensor]:
    """fn's output and the gradient of every differentiable input, on fresh leaves (state restored after)."""
    leaves = [t.detach().requires_grad_() for t in example.leaves]

    def run() -> list[torch.Tensor]:
        out = example.run(fn, leaves)
        out.backward(example.grad.to(out.dtype))
        return [out.detach()] + [t.grad for t in leaves]

    return example.keeping_state(run)  # type: ignore[return-value]


Grads = list[torch.Tensor]


def references(case: Case) -> tuple[Grads, Grads]:
    """Output and gradients of the reference in the case dtype and in float64."""
    with use_ops_backend("reference"):
        return grads_of(case.example, case.ref()), grads_of(case.example.to(torch.float64), case.ref())


def check(case: Case, backend: str, refs: tuple[Grads, Grads] | None = None) -> dict[str, Any]:
    """Errors of fused and reference (in the case dtype) against a float64 reference; refs, when given,
    are the case's `references` (computed once for the sweep's many budgets)."""
    with use_ops_backend(backend):
        fused = grads_of(case.example, case.fused())
    ref, ref64 = refs if refs is not None else references(case)
    names = ["out"] + [f"d{name}" for name in case.spec.grad_names]
    errs = {}
    ok = True
    worst = 0.0
    for name, a, r, r64 in zip(names, fused, ref, ref64, strict=True):
        ours, theirs, vs_ref = rel_err(a, r64), rel_err(r, r64), rel_err(a, r)
        # the project's rule: fp32 within 1e-5 of the reference, or at most 2x the same-dtype reference's error
        fraction = ours / (2 * theirs + 1e-6)
        if case.dtype == torch.float32:
            fraction = min(fraction, vs_ref / 1e-5)
        ok &= fraction <= 1.0
        worst = max(worst, fraction)
        errs[name] = {"fused_vs_fp64": ours, "reference_vs_fp64": theirs, "fused_vs_reference": vs_ref}
    return {"ok": bool(ok), "worst_fraction_of_allowance": worst, "errors": errs}


def time_case(
    case: Case, backend: str, device: torch.device, args: argparse.Namespace, compiled: Callable | None
) -> dict:
    """Forward and forward+backward medians (ms) of fused, eager reference and compiled reference."""
    leaves = [t.detach().requires_grad_() for t in case.leaves]
    impls: dict[str, tuple[str, Callable[..., torch.Tensor]]] = {
        "fused": (backend, case.fused()),
        "eager": ("reference", case.ref()),
    }
    if compiled is not None:
        impls["compiled"] = ("reference", compiled)
    res: dict[str, Any] = {}
    for name, (mode, fn) in impls.items():
        with use_ops_backend(mode):
            if time.monotonic() > args.deadline:
                res[name] = {"skipped": "deadline"}
                continue

            def fwd(fn: Callable[..., torch.Tensor] = fn) -> None:
                with torch.no_grad():
                    case.call(fn, leaves)

            def fwd_bwd(fn: Callable[..., torch.Tensor] = fn) -> None:
                case.call(fn, leaves).backward(case.grad)

            try:
                t_f = bench_ms(fwd, device, args.rep_ms, [])
                t_fb = bench_ms(fwd_bwd, device, args.rep_ms, leaves)
            except Exception as exc:  # a failing baseline (e.g. compile) must not hide the other numbers
                res[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
                continue
            res[name] = {
                "fwd_ms": t_f,
                "fwd_bwd_ms": t_fb,
                "fwd_gbps": case.bytes_fwd / t_f / 1e6,
                "fwd_bwd_gbps": case.bytes_fwd_bwd / t_fb / 1e6,
            }
    return res


def sweep(
    case: Case,
    backend: str,
    device: torch.device,
    args: argparse.Namespace,
    out: list[dict[str, Any]] | None = None,
    save: Callable[[], None] = lambda: None,
) -> list[dict[str, Any]]:
    """Correctness and fused timings of the headline case under each block-size budget of SWEEP, appended
    to `out` (returned) with `save()` after each."""
    tuned = triton_kernels("_common").tuned

    refs = references(case)
    out = [] if out is None else out
    for cfg in SWEEP:
        save()
        if time.monotonic() > args.deadline:
            out.append({"config": cfg, "skipped": "deadline"})
            continue
        try:
            with tuned(**cfg):
                chk = check(case, backend, refs)
                timing = time_case(case, backend, device, args, None)
        except Exception as exc:  # one bad budget must not lose the others
            out.append({"config": cfg, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})
            continue
        out.append({"config": cfg, "ok": chk["ok"], **timing["fused"]})
        print(f"sweep {cfg or 'default'}: ok={chk['ok']} {timing['fused'].get('fwd_bwd_ms', float('nan')):.3f} ms")
    return out


def targets(result: dict[str, Any], copy: float, swept: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's fwd+bwd targets for the headline case: ratios, copy fraction, met or not (default budget),
    and the same for the fastest correct budget of the sweep."""
    t = result["timing"]

    def judge(fused_ms: float | None, gbps: float | None) -> dict[str, Any]:
        got: dict[str, Any] = {}
        for name, impl in (("vs_eager", "eager"), ("vs_compiled", "compiled")):
            base = t.get(impl, {}).get("fwd_bwd_ms")
            got[name] = base / fused_ms if base and fused_ms else None
        got["copy_fraction"] = gbps / copy if gbps else None
        got["met"] = {k: (got[k] is not None and got[k] >= v) for k, v in TARGETS.items()}
        return got

    fused = t.get("fused", {})
    out = {"case": result["shape"] + " " + result["dtype"], "targets": TARGETS}
    out["default"] = judge(fused.get("fwd_bwd_ms"), fused.get("fwd_bwd_gbps"))
    good = [r for r in swept if r.get("ok") and "fwd_bwd_ms" in r]
    if good:
        best = min(good, key=lambda r: r["fwd_bwd_ms"])
        out["best_sweep"] = {"config": best["config"], **judge(best["fwd_bwd_ms"], best["fwd_bwd_gbps"])}
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Fused DDA ops: {report['device']}",
        "",
        f"torch {report['torch']}, triton {report['triton']}, batch {report['batch']}, fused backend "
        f"`{report['backend']}`, device copy {report['copy_gbps']:.0f} GB/s. Times are medians in ms; GB/s "
        "counts minimum traffic; % is of the measured copy bandwidth.",
        "",
        "| op | host | shape | dtype | ok | fused fwd | eager fwd | compiled fwd | fused f+b | eager f+b "
        "| compiled f+b | fused f+b GB/s (%) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def ms(r: dict, impl: str, key: str) -> str:
        v = r["timing"].get(impl, {})
        return f"{v[key]:.3f}" if key in v else v.get("skipped", "error" if "error" in v else "-")

    for r in report["results"]:
        if r["check"].get("error"):  # the row raised before it could be checked or timed
            lines.append(f"| {r['op']} | {r['host']} | {r['shape']} | {r['dtype']} | NO | {r['check']['error']} |")
            continue
        fused = r["timing"].get("fused", {})
        gb = fused.get("fwd_bwd_gbps")
        gbs = f"{gb:.1f} ({100 * gb / report['copy_gbps']:.0f}%)" if gb else "-"
        cells = [r["op"], r["host"], r["shape"], r["dtype"], "yes" if r["check"]["ok"] else "NO"]
        cells += [ms(r, impl, key) for key in ("fwd_ms", "fwd_bwd_ms") for impl in ("fused", "eager", "compiled")]
        lines.append("| " + " | ".join([*cells, gbs]) + " |")
    tg = report.get("targets")
    if tg:
        lines += ["", f"## Targets ({HEADLINE['op']} fwd+bwd, {tg['case']})", ""]
        lines += ["| budget | vs eager | vs torch.compile | of copy bandwidth |", "|---|---|---|---|"]
        for name in ("default", "best_sweep"):
            if name not in tg:
                continue
            g = tg[name]

            def cell(key: str, g: dict = g) -> str:
                v = g[key]
                goal = TARGETS[key]
                if v is None:
                    return "-"
                shown = f"{100 * v:.0f}%" if key == "copy_fraction" else f"{v:.2f}x"
                aim = f"{100 * goal:.0f}%" if key == "copy_fraction" else f"{goal}x"
                return f"{shown} ({'met' if g['met'][key] else 'not met'}, target {aim})"

            label = "default" if name == "default" else f"best of sweep {g['config'] or '{}'}"
            lines.append(f"| {label} | {cell('vs_eager')} | {cell('vs_compiled')} | {cell('copy_fraction')} |")
    if report.get("sweep"):
        lines += ["", "## Tuning sweep (headline case, fused)", ""]
        lines += ["| budget | ok | fwd ms | fwd+bwd ms | fwd+bwd GB/s |", "|---|---|---|---|---|"]
        for r in report["sweep"]:
            cfg = ", ".join(f"{k}={v}" for k, v in r["config"].items()) or "default"
            if "fwd_bwd_ms" not in r:
                lines.append(f"| {cfg} | - | {r.get('error') or r.get('skipped', '-')} | | |")
                continue
            ok = "yes" if r["ok"] else "NO"
            lines.append(f"| {cfg} | {ok} | {r['fwd_ms']:.3f} | {r['fwd_bwd_ms']:.3f} | {r['fwd_bwd_gbps']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    soft = soft_deadline_left()  # bench/gpu_check.sh's soft deadline for this part (inf when none)
    args.deadline = time.monotonic() + min(args.deadline_s, soft)
    if args.dry_run:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        print("gpu_check: no CUDA device (use --dry-run on CPU)", file=sys.stderr)
        return 2
    backend = args.backend or ("torch" if args.dry_run else "triton")
    batch = args.batch or (2 if args.dry_run else 48)
    if args.compile is None:
        args.compile = not args.dry_run
    hosts = DRY_HOSTS if args.dry_run else HOSTS
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "missing"
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})",
        "torch": torch.__version__,
        "triton": triton_version,
        "batch": batch,
        "backend": backend,
        "dry_run": args.dry_run,
        "status": "running",
        "copy_gbps": copy_gbps(device, args.rep_ms),
        "results": [],
    }
    save = _saver(args, report)
    save()
    plan = [
        (op, host, c, s, dname)
        for dname in args.dtypes.split(",")
        for host in args.hosts.split(",")
        for c, s in hosts[host]
        for op in registry.names()  # every registered fused op, each in its checked variant
    ]
    head_c, head_s = hosts.get(HEADLINE["host"], [(0, 0)])[HEADLINE["stage"]]
    headline = (HEADLINE["op"], HEADLINE["host"], head_c, head_s, HEADLINE["dtype"])
    if headline in plan:  # first, so that no deadline skips it
        plan.remove(headline)
        plan.insert(0, headline)
    dynamic_compiled: dict[str, Callable] = {}
    all_ok = True
    head_case: tuple[Case, dict[str, Any]] | None = None
    for op, host, c, s, dname in plan:
        if time.monotonic() > args.deadline:
            report.setdefault("skipped_rows", []).append(f"{op} {host} {c}@{s} {dname}")
            continue
        try:
            case = Case(op, batch, c, s, DTYPES[dname], device)
            chk = check(case, backend)
        except Exception as exc:  # noqa: BLE001 - one row's failure (compile, memory) must not end the stage
            report["results"].append({"op": op, "host": host, "shape": f"{c}@{s}", "dtype": dname,
                                      "check": {"ok": False, "error": error_line(exc)}, "timing": {}})  # fmt: skip
            all_ok = False
            print(f"{op:18s} {host} {c}@{s} {dname}: error {error_line(exc)}", flush=True)
            save()
            continue
        all_ok &= chk["ok"]
        is_headline = (op, host, c, s, dname) == headline
        compiled = None
        if args.compile and is_headline:  # static shapes: the strongest torch.compile baseline
            compiled = torch.compile(case.ref(), dynamic=False)
        elif args.compile:  # one dynamic-shape compile per op keeps the recompiles within the time box
            if op not in dynamic_compiled:
                dynamic_compiled[op] = torch.compile(case.ref(), dynamic=True)
            compiled = dynamic_compiled[op]
        timing = time_case(case, backend, device, args, compiled)
        result = {"op": op, "host": host, "shape": f"{c}@{s}", "dtype": dname, "check": chk, "timing": timing}
        if compiled is not None:
            result["compile"] = "static" if is_headline else "dynamic"
        report["results"].append(result)
        f = timing.get("fused", {})
        fwd, fwd_bwd = (f.get(k, float("nan")) for k in ("fwd_ms", "fwd_bwd_ms"))
        print(f"{op:18s} {host} {c}@{s} {dname}: ok={chk['ok']} fused {fwd:.3f} / {fwd_bwd:.3f} ms", flush=True)
        if is_headline:
            report["targets"] = targets(result, report["copy_gbps"], [])
            head_case = (case, result)
        else:
            del case
        save()
    if head_case is not None:  # last: the sweep compiles every kernel once per budget
        case, result = head_case
        report["sweep"] = []
        if args.sweep:
            sweep(case, backend, device, args, report["sweep"], save)
        report["targets"] = targets(result, report["copy_gbps"], report["sweep"])
        del case, head_case
    report["all_ok"] = bool(all_ok)
    report["status"] = "done"
    save()
    print(f"gpu_check: {'all correct' if all_ok else 'MISMATCHES'}; wrote {args.stage_file or args.out}")
    return 0 if all_ok else 1


def _saver(args: argparse.Namespace, report: dict[str, Any]) -> Callable[[], None]:
    """A function that writes the report as it stands: into the stage file's check "ops" (markdown
    included), or as gpu_check.json + gpu_check.md in --out."""
    if args.stage_file is None:

        def save() -> None:
            atomic_write(args.out / "gpu_check.json", json.dumps(report, indent=1))
            atomic_write(args.out / "gpu_check.md", markdown(report))

        return save
    check = StageFile(args.stage_file).check("ops", part="ops")
    check.data["report"] = report

    def save_stage() -> None:
        check.data["markdown"] = markdown(report)
        if report.get("status") == "done":
            check.finish(report["all_ok"])
        else:
            check.save()

    return save_stage


if __name__ == "__main__":
    raise SystemExit(main())
