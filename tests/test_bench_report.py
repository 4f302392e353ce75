"""bench/report.py: ratios against the baseline of each group, per-call times, markdown and optional PNG."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_report():
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench(group: str, variant: str, baseline: str, median: float, **info) -> dict:
    extra = {"variant": variant, "baseline": baseline, **info}
    return {
        "group": group,
        "name": f"test[{group}-{variant}]",
        "stats": {"median": median, "rounds": 5},
        "extra_info": extra,
    }


@pytest.fixture
def bench_json(tmp_path: Path) -> Path:
    op = dict(table="fused ops", calls_per_round=2, device="cpu")
    data = {
        "machine_info": {"cpu": {"brand_raw": "Test CPU", "count": 2}, "python_version": "3.11"},
        "benchmarks": [
            bench("op fwd", "reference", "reference", 4e-3, saved_bytes=1000, gbps=1.0, **op),
            bench("op fwd", "torch", "reference", 1e-3, saved_bytes=400, gbps=4.0, **op),
            bench("loader", "torch", "torch", 0.5, table="input pipelines", images_per_s=128.0),
            bench("loader", "dali-cpu", "torch", 0.25, table="input pipelines", images_per_s=256.0),
            # predict rows do different work per call: the ratio is of faces/s, not of times per call
            bench("predict", "classifier", "classifier", 0.1, table="predict", faces_per_s=320.0),
            bench("predict", "photos", "classifier", 2.0, table="predict", faces_per_s=12.0),
        ],
    }
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    return path


def test_ratios_and_per_call_times(bench_json: Path) -> None:
    report = load_report()
    _, rows = report.load_rows(bench_json)
    rows = {(r["group"], r["variant"]): r for r in report.with_ratios(rows)}
    assert rows["op fwd", "reference"]["median_s"] == pytest.approx(2e-3)  # per call: median / calls_per_round
    assert rows["op fwd", "torch"]["speedup"] == pytest.approx(4.0)
    assert rows["op fwd", "torch"]["saved_ratio"] == pytest.approx(0.4)
    assert rows["loader", "dali-cpu"]["speedup"] == pytest.approx(2.0)
    assert rows["loader", "torch"]["saved_ratio"] is None
    assert rows["predict", "photos"]["speedup"] == pytest.approx(12.0 / 320.0)


def test_markdown_and_png(bench_json: Path, tmp_path: Path) -> None:
    report = load_report()
    md, png = tmp_path / "out.md", tmp_path / "out.png"
    assert report.main([str(bench_json), "--markdown", str(md), "--png", str(png)]) == 0
    text = md.read_text()
    assert "## fused ops" in text and "## input pipelines" in text
    assert "| op fwd | 2.000 | 4.00x |" in text  # summary: baseline ms per call, then the torch speed-up
    assert "| loader | dali-cpu | 250.000 | 2.00x vs torch |" in text
    assert "| predict | photos | 2000.000 | 0.04x vs classifier | - | (12.0) |" in text
    if importlib.util.find_spec("matplotlib") is not None:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_is_optional_without_matplotlib(bench_json: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    report = load_report()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    md, png = tmp_path / "out.md", tmp_path / "out.png"
    assert report.main([str(bench_json), "--markdown", str(md), "--png", str(png)]) == 0
    assert md.is_file() and not png.exists()
    assert "matplotlib is not installed" in capsys.readouterr().err
