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
