"""gpu_check stage 0, the minimum useful result (<= 90 s on one H200): environment, each fused op
forward and backward at one real DDA shape against the reference, and a few fused resnet34_dda bf16
training steps with their images/s and peak memory. One process, three checks (env, ops, step), each
saved to stage0.json as soon as it has a row.

    GPU_CHECK_DRY_RUN=1 TRITON_INTERPRET=1 PYTHONPATH=. python3 bench/gpu_stage0.py OUT/stage0.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from gpucommon import device, dry_run, environment, error_line, loaded_modules, peak_bytes, peak_reset, sync

from bench.benchutil import make_step
from bench.gpu_check import Case, check
from bench.stagefile import StageFile
from ddakern.dispatch import use_ops_backend
from ddakern.ops import registry

# the ResNet-50 stage-1 map (the headline case) for both ops, bf16 activations, fp32 BN parameters
OPS_SHAPE = {"gpu": (48, 256, 56), "dry": (2, 16, 6)}
# dry run: resnet18_dda (same DDA blocks and fused path, a third of the CPU time) at 64 px (at 32 px the last
# stage is 1x1 and batch 2 gives degenerate batch statistics)
STEP = {
    "gpu": {"model": "resnet34_dda", "batch": 48, "image_size": 224, "steps": 5},
    "dry": {"model": "resnet18_dda", "batch": 2, "image_size": 64, "steps": 1},
}


def ops_check(sf: StageFile, dev: torch.device) -> bool:
    """Every registered fused op in its checked variant (attention_residual training, channel_attention scale +
    residual), bf16, vs the reference."""
    chk = sf.check("ops", part="basics")
    n, c, s = OPS_SHAPE["dry" if dry_run() else "gpu"]
    rows = chk.data.setdefault("rows", [])
    ok = True
    for op in registry.names():
        t0 = time.monotonic()
        try:
            res = check(Case(op, n, c, s, torch.bfloat16, dev), "triton")
        except Exception as exc:  # a failing op must not hide the other's result
            rows.append({"op": op, "shape": [n, c, s, s], "dtype": "bf16", "ok": False, "error": error_line(exc)})
            ok = False
            chk.save()
            continue
        ok &= res["ok"]
        rows.append({"op": op, "shape": [n, c, s, s], "dtype": "bf16", "seconds": time.monotonic() - t0, **res})
        print(f"stage0 ops: {op} {n}x{c}x{s}x{s} bf16 ok={res['ok']} "
              f"worst {res['worst_fraction_of_allowance']:.2f} of the allowance", flush=True)  # fmt: skip
        chk.save()
    return chk.finish(ok)


def step_check(sf: StageFile, dev: torch.device) -> bool:
    """A few fused resnet34_dda training steps (bf16 autocast on CUDA): warm-up (compiles), then timed."""
    chk = sf.check("step", part="basics")
    size = STEP["dry" if dry_run() else "gpu"]
    chk.data.update(variant="fused", amp="bf16" if dev.type == "cuda" else "none", **size)
    # CUDA: the Triton kernels ("auto" picks them too); dry run: the torch backend (the interpreter would take
    # minutes for a whole ResNet step; the ops check above runs the interpreted kernels)
    backend = "torch" if dry_run() else "triton"
    chk.data["backend"] = backend
    with use_ops_backend(backend):
        step, _, _ = make_step(size["model"], {"fused": True}, size["batch"], size["image_size"], dev)
        t0 = time.monotonic()
        loss = float(step())
        chk.data["warmup_s"] = time.monotonic() - t0
        chk.data["losses"] = [loss]
        chk.save()
        peak_reset(dev)
        times = []
        for _ in range(size["steps"]):
            if times and chk.left() < 0:  # at least one timed step: a slow compile cuts steps, not the figure
                chk.data["note"] = "soft deadline: fewer timed steps"
                break
            sync(dev)
            t = time.perf_counter()
            loss = float(step())
            times.append(time.perf_counter() - t)
            chk.data["losses"].append(loss)
            chk.data.update(step_ms=[1e3 * v for v in times], images_per_s=size["batch"] / statistics.median(times),
                            peak_memory_bytes=peak_bytes(dev))  # fmt: skip
            chk.save()
    ok = all(0 < v < 20 for v in chk.data["losses"]) and bool(times)
    print(f"stage0 step: {size['model']} fused, {chk.data.get('images_per_s', 0):.1f} img/s, ok={ok}", flush=True)
    return chk.finish(ok)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stage_file", type=Path)
    args = p.parse_args(argv)
    sf = StageFile(args.stage_file)
    env = sf.check("env", part="basics")
    dev = device()
    env.data.update(environment(dev))
    env.finish(True)
    print(f"stage0 env: {env.data.get('gpu', dev)} torch {torch.__version__} triton {env.data['triton']}", flush=True)
    ok = True
    for run in (ops_check, step_check):  # each saves its rows as it goes
        try:
            ok &= run(sf, dev)
        except Exception as exc:  # record it and go on: the next check may still run
            name = run.__name__.removesuffix("_check")
            sf.data["checks"][name].update(status="crashed", ok=False, error=error_line(exc))
            sf.save()
            print(f"stage0 {name}: {error_line(exc)}", flush=True)
            ok = False
    env.data["modules"] = loaded_modules()
    sf.save()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
