"""bench/gpu_check.py: --help and the CPU --dry-run path (tiny shapes, torch backend) work end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"


def test_help():
    res = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "--dry-run" in res.stdout


def test_dry_run_writes_results(tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--dry-run",
            "--out",
            str(tmp_path),
            "--dtypes",
            "fp32,bf16",
            "--hosts",
            "resnet50",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["all_ok"] and report["backend"] == "torch" and report["copy_gbps"] > 0
    assert len(report["results"]) == 2 * 2 * 2  # dtypes x shapes x ops
    for r in report["results"]:
        assert r["check"]["ok"]
        assert set(r["timing"]) == {"fused", "eager"}
        assert r["timing"]["fused"]["fwd_bwd_ms"] > 0
    table = (tmp_path / "gpu_check.md").read_text()
    assert table.count("\n| attention_residual |") == 4 and table.count("\n| channel_attention |") == 4
    # the headline case (ResNet-50 stage 1, bf16) runs first, then the tuning sweep and the target verdicts
    head = report["results"][0]
    assert (head["op"], head["shape"], head["dtype"]) == ("attention_residual", "8@6", "bf16")
    assert len(report["sweep"]) == 11 and all(r["ok"] and r["fwd_bwd_ms"] > 0 for r in report["sweep"])
    assert report["sweep"][0]["config"] == {} and {"tile": 8192} in [r["config"] for r in report["sweep"]]
    verdict = report["targets"]
    assert verdict["default"]["vs_eager"] > 0 and verdict["default"]["vs_compiled"] is None  # no compile in dry run
    assert set(verdict["default"]["met"]) == {"vs_eager", "vs_compiled", "copy_fraction"}
    assert verdict["best_sweep"]["config"] in [r["config"] for r in report["sweep"]]
    assert "## Targets" in table and table.count("\n| target_programs=") == 2
