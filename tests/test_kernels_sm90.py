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


def test_parse_tuning_overrides_and_errors():
    base = kcommon.Tuning(tile=4096, max_block_c=1024, target_programs=1024, num_warps=8, bwd_tile=2048)
    assert kcommon.parse_tuning("", base) == base
    got = kcommon.parse_tuning(" tile=8192, num_warps=4 ", base)
    assert (got.tile, got.num_warps, got.bwd_tile) == (8192, 4, 2048)
    for bad in ("tiles=1", "tile=", "tile=-4", "tile=0", "num_warps=x"):
        with pytest.raises(ValueError, match="DDAKERN_TRITON_TUNING: bad entry"):
            kcommon.parse_tuning(bad, base)


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


def test_tuning_env_var_sets_the_default_budget():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = (
        "from ddakern.ops._common import triton_kernels; t = triton_kernels('_common').tuning(); "
        "print(t.tile, t.bwd_tile, t.num_warps)"
    )

    def run(spec: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env={**env, "DDAKERN_TRITON_TUNING": spec},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    assert run("").stdout.split() == ["4096", "2048", "8"]
    assert run("tile=8192,num_warps=4").stdout.split() == ["8192", "2048", "4"]
    bad = run("tile=big")
    assert bad.returncode != 0 and "DDAKERN_TRITON_TUNING: bad entry 'tile=big'" in bad.stderr
