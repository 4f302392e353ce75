"""The whole training step of resnet34_dda / resnet50_dda: fused ops, recompute, channels_last, compile.

Every variant is one RAdam step at the same batch; ratios (speed-up, saved_ratio) are against `eager`
of the same model in the same run (bench/report.py). `saved_bytes` = activations autograd keeps for
backward, parameters excluded (they exist anyway; ddakern.memory counts them apart), inputs of
recomputed regions included. On CUDA every variant runs in bf16 autocast at batch 48, 224 px and
records peak `max_memory_allocated`; on CPU fp32 at bench_scale()'s small size, compile skipped (Inductor
on 2 cores takes minutes for the DDA graphs) and resnet50_dda limited to eager / recompute.
"""

from __future__ import annotations

import math

import pytest
import torch
from benchutil import (
    SCALE,
    VARIANTS,
    make_step,
    median_s,
    peak_memory_bytes,
    peak_memory_reset,
    skip_compile_if_disabled,
)

MODELS = ["resnet34_dda", "resnet50_dda"]
CPU_VARIANTS = {"resnet50_dda": ("eager", "recompute-dda", "recompute-all")}
SMOKE_COVERED = ("fused", "recompute-dda")  # the CI smoke run has them in fused+recompute-dda


def cases():
    for model in MODELS:
        for variant in VARIANTS:
            if not SCALE.cuda and (variant == "compile" or variant not in CPU_VARIANTS.get(model, VARIANTS)):
                continue
            yield pytest.param(model, variant, id=f"{model}-{variant}")


@pytest.mark.parametrize("name,variant", list(cases()))
def test_step(benchmark, name: str, variant: str) -> None:
    opts = VARIANTS[variant]
    if opts.get("compile"):
        skip_compile_if_disabled(benchmark)
    if benchmark.disabled and not SCALE.cuda and (name != "resnet34_dda" or variant in SMOKE_COVERED):
        pytest.skip("the CI smoke run (--benchmark-disable on CPU) runs resnet34_dda's combined variants only")
    step, saved, model = make_step(name, opts)
    if not benchmark.disabled:  # --benchmark-disable runs the step once: no warm-up needed
        step()  # warm-up (and compilation)
    benchmark.group = f"step {name}"
    benchmark.extra_info.update({
        "table": "whole training step", "model": name, "variant": variant, "baseline": "eager",
        "batch": SCALE.batch, "image_size": SCALE.image_size, "device": str(SCALE.device),
        "amp": "bf16" if SCALE.cuda else "none",
    })  # fmt: skip
    if not opts.get("compile"):  # saved-tensor hooks would be one more compile
        nbytes = saved()
        assert nbytes > 0
        benchmark.extra_info["saved_bytes"] = nbytes
    peak_memory_reset()
    loss = float(benchmark.pedantic(step, rounds=SCALE.rounds, iterations=1))
    assert math.isfinite(loss) and 0.0 < loss < 20.0
    med = median_s(benchmark)
    if med is not None:
        benchmark.extra_info["images_per_s"] = SCALE.batch / med
    benchmark.extra_info["peak_memory_bytes"] = peak_memory_bytes()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_step_ratios_script_runs_interleaved() -> None:
    """bench/step_ratios.py (the interleaved whole-step ratios of docs/benchmarks.md) on a tiny step."""
    from step_ratios import measure, table

    result = measure("resnet18_dda", batch=2, image_size=32, rounds=2, variants=["eager", "recompute-dda"])
    rows = result["variants"]
    assert rows["eager"]["time_ratio_min"] == 1.0 and len(rows["recompute-dda"]["times_s"]) == 2
    assert 0.0 < rows["recompute-dda"]["saved_ratio"] < 0.5  # the DDA branches and the host's BN/ReLU outputs go
    assert all(math.isfinite(r["time_ratio_median"]) and r["images_per_s"] > 0 for r in rows.values())
    assert "recompute-dda" in table(result)
