"""A model trained by train.run on the built-in synthetic set, its test images fed through
`python -m ddakern predict --detector none`: the accuracy equals train.run's own test accuracy.

The run is the default recipe shrunk to seconds (resnet18_dda, fewer images, 32 px, 1 epoch, fused
ops as in the README's main command); predict reads the same PrivateTest images (48x48 gray, written as PNG,
lossless) and must apply the same preprocessing.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_predict_reproduces_train_run_test_accuracy(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    data, run = tmp_path / "data", tmp_path / "run"
    train = [sys.executable, "-m", "train.run", "--fused-kernels", "--data-root", str(data), "--out", str(run)]
    train += ["--model", "resnet18_dda", "--epochs", "1", "--image-size", "32", "--batch-size", "16", "--no-tta"]
    train += ["--no-progress", "--synthetic-train", "112", "--synthetic-val", "28", "--synthetic-test", "70"]
    r = subprocess.run(train, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    summary = json.loads((run / "summary.json").read_text())
    names = summary["class_names"]

    images, labels = tmp_path / "test_images", {}
    images.mkdir()
    with open(data / "fer2013" / "fer2013.csv", newline="") as f:
        for i, row in enumerate(x for x in csv.DictReader(f) if x["Usage"] == "PrivateTest"):
            pixels = np.array(row["pixels"].split(), dtype=np.uint8).reshape(48, 48)
            Image.fromarray(pixels).save(images / f"{i:04d}.png")
            labels[f"{i:04d}.png"] = names[int(row["emotion"])]
    out = tmp_path / "pred"
    cmd = [sys.executable, "-m", "ddakern", "predict", str(run / "best.pt"), str(images), "--out", str(out)]
    r = subprocess.run(
        cmd + ["--detector", "none", "--no-progress", "--device", "cpu"], capture_output=True, text=True, env=env
    )
    assert r.returncode == 0, r.stderr
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(labels) == summary["test"]["images"] == 70
    correct = sum(labels[Path(row["file"]).name] == row["label"] for row in rows)
    assert 100.0 * correct / len(rows) == summary["test_accuracy"]
    # the whole confusion matrix agrees, not just its trace
    confusion = np.zeros((len(names), len(names)), dtype=int)
    for row in rows:
        confusion[names.index(labels[Path(row["file"]).name]), names.index(row["label"])] += 1
    assert confusion.tolist() == summary["test"]["confusion_matrix"]
