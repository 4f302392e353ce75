"""Export round trips: ONNX Runtime, TorchScript and torch.export vs PyTorch (and the fused-ops model) for
resnet18_dda at two sizes (dynamic batch), through `python -m ddakern export`, and `predict --backend onnxruntime`."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from predict_helpers import write_checkpoint

from ddakern.inference.checkpoint import load_model
from ddakern.inference.export import export, runner

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

REL = 1e-4


def rel_diff(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module", params=[48, 80])
def checkpoint(request, tmp_path_factory) -> Path:
    # DDA after stage 2 (spatial path + upsampler) and stage 4 (context only): both block kinds
    folder = tmp_path_factory.mktemp(f"ckpt{request.param}")
    return write_checkpoint(folder / "best.pt", dda_stages=(2, 4), image_size=request.param, width=32)


@pytest.fixture(scope="module")
def loaded(checkpoint):
    """The checkpoint's model and spec, read once per size for the three formats (eval mode: exports only read it)."""
    return load_model(checkpoint)


@pytest.mark.parametrize("fmt,suffix", [("onnx", ".onnx"), ("torchscript", ".ts.pt"), ("exported-program", ".pt2")])
def test_round_trip_matches_pytorch(checkpoint, loaded, tmp_path, fmt, suffix):
    model, spec = loaded
    path = export(model, spec, fmt, tmp_path / f"m{suffix}")
    run = runner(fmt, path)
    for batch in (1, 5):  # exported at batch 2: the batch axis is dynamic
        x = torch.randn(batch, 3, spec.image_size, spec.image_size)
        with torch.no_grad():
            ref = model(x).numpy()
        got = run(x)
        assert got.shape == ref.shape
        assert rel_diff(got, ref) <= REL, (fmt, batch)
    if fmt == "onnx":  # the plain graph that was exported computes what the fused-ops model computes
        fused, _ = load_model(checkpoint, fused_ops=True)
        x = x[:2]  # the fused ops run in the Triton interpreter on CPU: its cost grows with the batch
        with torch.no_grad():
            assert rel_diff(run(x), fused(x).numpy()) <= REL


def test_export_cli_prints_parity_and_predict_runs_the_onnx_file(tmp_path, capsys):
    """`python -m ddakern export` run for real; predict (both backends) and the refused second export go
    through the same CLI `main` in-process (no interpreter start each)."""
    pytest.importorskip("cv2")
    pytest.importorskip("skimage")
    from PIL import Image
    from predict_helpers import astronaut

    from ddakern.cli import main

    ckpt = write_checkpoint(tmp_path / "best.pt", image_size=64)
    r = subprocess.run(
        [sys.executable, "-m", "ddakern", "export", str(ckpt), "--format", "onnx"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert "random, batch 3: max abs diff" in r.stdout and "real face (skimage.data.astronaut())" in r.stdout
    onnx_file = tmp_path / "best.onnx"
    assert onnx_file.is_file()
    Image.fromarray(astronaut()).save(tmp_path / "a.png")
    rows = {}
    for backend, model_file in (("torch", ckpt), ("onnxruntime", onnx_file)):
        out = tmp_path / backend
        args = ["predict", str(model_file), str(tmp_path / "a.png"), "--out", str(out)]
        assert main([*args, "--backend", backend, "--no-progress"]) == 0, capsys.readouterr().err
        with open(out / "predictions.csv", newline="") as f:
            rows[backend] = list(csv.DictReader(f))
    (a,), (b,) = rows["torch"], rows["onnxruntime"]
    assert a["label"] == b["label"] and a["x0"] == b["x0"]
    for key in a:
        if key.startswith("p_"):
            assert abs(float(a[key]) - float(b[key])) < 1e-5
    capsys.readouterr()
    assert main(["export", str(ckpt), "--format", "onnx"]) == 2
    assert "exists" in capsys.readouterr().err  # no overwrite unasked
