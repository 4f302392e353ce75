"""`pip install ddakern` as a user gets it: the wheel built from a copy of the sources holds ddakern (with
ddakern.kernels) and the engine as ddakern_train -- no generic top-level `train` or `kernels` -- and the
`ddakern` console script; installed (pip --target, no dependencies: the test environment has them), the
command and the engine's help run from a folder outside the checkout."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "ddakern", "kernels", "train")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="building a wheel needs setuptools")
def test_wheel_ships_the_engine_as_ddakern_train_with_the_ddakern_command(tmp_path):
    src, dist, target = tmp_path / "src", tmp_path / "dist", tmp_path / "site"
    ignore = shutil.ignore_patterns("__pycache__")
    for name in SOURCES:  # a copy: building writes build/ and *.egg-info beside the sources
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    build = "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"
    r = subprocess.run([sys.executable, "-c", build, str(dist)], cwd=src, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = dist / r.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = next(z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"ddakern", "ddakern_train"}  # no top-level train or kernels
    assert {"ddakern/kernels/attention_residual.py", "ddakern_train/run.py", "ddakern_train/data/layouts.py"} <= set(
        names
    )
    assert "[console_scripts]\nddakern = ddakern.cli:main" in entry_points

    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target), str(wheel)]
    r = subprocess.run(pip, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    script = target / "bin" / "ddakern"
    assert script.is_file()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}  # the installed copy, not the checkout
    r = subprocess.run([str(script), "--help"], cwd=outside, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: ddakern COMMAND") and "\n  train " in r.stdout
    r = subprocess.run(
        [str(script), "train", "--help"], cwd=outside, env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: ddakern train ") and "--fused-ops" in r.stdout
