"""The Triton kernels compile for an H100/H200 (sm_90) without spilling, checked offline.

bench/sm90_compile.py runs the real launchers at DDA shapes with launches captured instead of run and
compiles every specialization through Triton's ptxas; the CPU interpreter used by the other kernel
tests cannot see compile errors or register spills.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddakern.ops import registry
from ddakern.ops._common import triton_kernels

kcommon = triton_kernels("_common")  # the launchers' block-size budget (imports no triton)

ROOT = Path(__file__).resolve().parents[1]
triton = pytest.importorskip("triton")
TOOLS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
needs_ptxas = pytest.mark.skipif(
    not (TOOLS / "ptxas").exists() or not (TOOLS / "cuobjdump").exists(),
    reason="this triton build ships no ptxas/cuobjdump",
)
KERNELS = {
    "_stats_partial_kernel", "_stats_finalize_kernel", "_fwd_kernel", "_bwd_kernel", "_bwd_dx_kernel",
    "_bwd_logits_kernel",
}  # fmt: skip


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("triton-cache")


def compile_quick(
    out: Path, cache: Path, tuning: str = "", shapes: str = ""
) -> tuple[subprocess.CompletedProcess, dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT), DDAKERN_TRITON_TUNING=tuning)
    proc = subprocess.run(
        [sys.executable, "bench/sm90_compile.py", "--quick", "--check", "--out", str(out)]
        + (["--shapes", shapes] if shapes else []),
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    report = out / "sm90_compile_quick.json"
    return proc, (json.loads(report.read_text()) if report.exists() else {})


@needs_ptxas
def test_every_kernel_compiles_for_sm90_without_spills(tmp_path, cache_dir):
    proc, report = compile_quick(tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["problems"] == []
    records = report["kernels"]
    assert {r["kernel"] for r in records} == KERNELS
    assert all(r["registers"] > 0 and r["warps_per_sm"] >= 8 for r in records)
    # the main target shape streams with 16-byte vector loads and stores in both kernels of the backward
    main = [r for r in records if r["kernel"] == "_bwd_kernel" and "48x256x56x56 bf16 nchw" in r["cases"][0]]
    assert main and all(r["load_vector"] == 4 and r["store_vector"] == 4 for r in main)
    # the training backward's second pass reads the per-position softmax statistics of the first pass
    # instead of reducing over the channels again: well under the first pass's instruction count
    first = [r for r in main if r["constants"]["WRITE_PARTIALS"] and not r["constants"]["WRITE_DL"]]
    second = [r for r in main if r["constants"]["CENTER"]]
    assert first and second and second[0]["sass_instructions"] < 0.6 * first[0]["sass_instructions"]
    assert (tmp_path / "sm90_compile_quick.md").read_text().count("\n| _") == len(records)


@needs_ptxas
def test_spilling_tuning_is_reported(tmp_path, cache_dir):
    """A 4096-element backward tile spills on sm_90 when H*W is not a multiple of 16 (14 x 14): --check fails."""
    proc, report = compile_quick(tmp_path, cache_dir, tuning="bwd_tile=4096", shapes="256x14")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert report["problems"] and all("_bwd_kernel" in p and "spills" in p for p in report["problems"])
    assert any("48x256x14x14" in p for p in report["problems"])


def _signature(call) -> tuple:
    """An op call's dtypes: each tensor argument's dtype, None, or the other argument's type."""
    kinds = [a[4] if isinstance(a, tuple) else None if a is None else type(a).__name__ for a in call.args]
    return (call.op, *kinds)


@pytest.mark.parametrize("amp", ["fp32", "bf16", "fp16"])
def test_quick_cases_pass_what_the_layers_pass(amp):
    """The hand-picked cases (bench.aot.Case: the quick compile's) call the fused ops with the dtypes the real
    layers pass in a training step (DDA's mask head, channel attention with a scale, the fusion's residual
    gate after a convolution): under AMP bf16 / fp16 activations, logits and scale with fp32 batch-norm
    weight, bias and statistics (the cases used to pass half-precision ones: a specialization training
    never launches). Fake tensors."""
    from bench import aot, aot_trace
    from ddakern.layers.channel_attention import ChannelAttention
    from ddakern.layers.dual_domain_fusion import DualDomainFusion
    from ddakern.layers.mask_head import MaskHead

    dtype = aot_trace.AMP[amp]
    with aot_trace.recording() as traced:
        conv, head = torch.nn.Conv2d(8, 8, 3, padding=1), MaskHead(8, fused_ops=True)
        gate, fusion = ChannelAttention(8, fused_ops=True), DualDomainFusion(16, 8, fused_ops=True)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            x = conv(torch.randn(2, 8, 6, 6))
            out = head(x, x) + gate(x, scale=torch.nn.functional.adaptive_avg_pool2d(x, 1)) + fusion(x, x)
        out.float().sum().backward()
    layers = {_signature(c) for c in traced}
    variants = [(spec.name, v) for spec in registry.ops() for v in spec.variants]
    cases = [aot.Case(op, (48, 64, 56, 56), amp, cl, v) for op, v in variants for cl in (False, True)]
    quick = {_signature(c) for case in cases for c in case.calls()}
    assert quick == layers
    assert next(c.args[2] for c in traced if c.op == "attention_residual")[4] == "fp32"  # bn.weight


def test_full_report_merges_versions_and_reports_spills():
    """The offline full run's merge and report: one row per specialization with each Triton's usage, a
    spill in a streaming kernel listed (with its version) and counted in the summary."""
    from bench import sm90_compile as sc

    call = "attention_residual(48x64x56x56:bf16, ...)"
    usage = dict(registers=96, stack_bytes=0, local_bytes=0, shared_bytes=512, load_vector=4, store_vector=4)
    rec = dict(kernel="_fwd_kernel", id="0:0", constants={"BLOCK_C": 64, "CENTER": True}, dtypes=["*bf16", "*fp32"])
    rec.update(num_warps=8, programs=960, cases=[call], n_cases=2, sass_instructions=500, warps_per_sm=16)
    spilling = {**rec, **usage, "registers": 255, "stack_bytes": 48}
    parts = [{"triton": "3.8.0", "kernels": [{**rec, **usage}]}, {"triton": "3.6.0", "kernels": [spilling]}]
    records = sc.merge(parts, {call: ["resnet18_dda train bf16 nchw batch 48"]})
    assert len(records) == 1 and records[0]["triton"]["3.6.0"]["stack_bytes"] == 48
    found = sc.full_problems(records)
    assert len(found) == 1 and found[0].startswith("triton 3.6.0: _fwd_kernel") and "resnet18_dda train" in found[0]
    summary = dict(runs=1, calls=1, trace_seconds=1.0)
    counts = dict(specializations=1, seconds=1.0, streaming_spills=0, errors=0)
    summary["triton"] = {v: dict(counts, spilling=int(v == "3.6.0")) for v in ("3.8.0", "3.6.0")}
    text = sc.full_markdown(summary, records)
    assert "| 3.6.0 | _fwd_kernel | BLOCK_C=64 CENTER | bf16,fp32 |" in text and "| 255 | 48 |" in text
    assert text.count("\n| _fwd_kernel |") == 1


def test_parse_tuning_overrides_and_errors():
    base = kcommon.Tuning(tile=4096, max_block_c=1024, target_programs=1024, num_warps=8, bwd_tile=2048)
    assert kcommon.parse_tuning("", base) == base
    got = kcommon.parse_tuning(" tile=8192, num_warps=4 ", base)
    assert (got.tile, got.num_warps, got.bwd_tile) == (8192, 4, 2048)
    for bad in ("tiles=1", "tile=", "tile=-4", "tile=0", "num_warps=x", "tile=3000", "num_warps=6"):
        with pytest.raises(ValueError, match="DDAKERN_TRITON_TUNING: bad entry"):
            kcommon.parse_tuning(bad, base)
    assert kcommon.parse_tuning("target_programs=1000", base).target_programs == 1000  # not a block size


def test_tuned_swaps_the_budget_the_launchers_read():
    before = kcommon.tuning()
    with kcommon.tuned(tile=128, max_block_c=16) as t:
        assert kcommon.tuning() is t and t.tile == 128
        assert kcommon.blocks(100, 49, c_contiguous=False) == (16, 8, 7)
    assert kcommon.tuning() is before


def test_capture_refuses_interpreted_kernels(monkeypatch):
    from bench import aot

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET unset"):
        with aot.capture():
            pass


@pytest.mark.parametrize(
    "hw,block_p,n", [(3136, 8, 48), (3136, 16, 1), (196, 4, 48), (49, 2, 5), (99, 64, 57), (1, 1, 1)]
)
def test_split_ranges_are_16_aligned_and_cover_every_position(hw, block_p, n):
    rng, split = kcommon.split_range(hw, block_p, n)
    assert rng % block_p == 0 and rng % 16 == 0
    assert (split - 1) * rng < hw <= split * rng


GRID_CODE = """
import json, sys
from bench import aot
from ddakern.ops import registry
out = []
for spec in registry.ops():
    for variant in spec.variants:
        for shape in ((70000, 8, 7, 7), (3, 2048, 7, 7)):
            with aot.capture() as launches:
                aot.Case(spec.name, shape, "bf16", False, variant).launch()
            out += [[spec.name, variant, shape[0], launch.name, list(launch.grid)] for launch in launches]
print(json.dumps(out))
"""


def test_every_launch_grid_fits_cuda_at_a_batch_past_65535():
    """CUDA allows 65535 programs on grid axes 1 and 2 (2**31 - 1 on axis 0), the interpreter any number:
    the batch goes on axis 0 of every launch, so a batch of 70000 launches (it used to be on axis 1: a
    GPU launch error from 65536 on). Launches recorded on fake tensors, nothing compiled or run."""
    from kernels._common import GRID_LIMITS

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", GRID_CODE], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout)
    assert {r[3] for r in rows} == KERNELS
    for op, variant, batch, kernel, grid in rows:
        assert all(g <= limit for g, limit in zip(grid, GRID_LIMITS)), (op, variant, kernel, grid)
        if kernel != "_stats_finalize_kernel":  # one program per channel block, whatever the batch
            assert grid[0] == batch, (op, variant, kernel, grid)
    with pytest.raises(ValueError, match="grid axis 1 exceed CUDA's limit of 65535"):
        kcommon.grid(1, 65536)
