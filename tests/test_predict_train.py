"""A model trained by train.run on the built-in synthetic set, its test images fed through
`ddakern predict --detector none`: the accuracy equals train.run's own test accuracy. Both commands run
through their `main` in-process (tests/inprocess.py), as `python -m` runs them, without two interpreter and
torch start-ups.

The run is the default recipe shrunk to seconds (resnet18_dda, fewer images, 32 px, 1 epoch, fused
ops as in the README's main command); predict reads the same PrivateTest images (48x48 gray, written as PNG,
lossless) and must apply the same preprocessing.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from inprocess import run_main
from PIL import Image

import ddakern.cli
from train import run as train_run


@pytest.mark.slow
def test_predict_reproduces_train_run_test_accuracy(tmp_path, capfd):
    data, run = tmp_path / "data", tmp_path / "run"
    train = ["--fused-kernels", "--data-root", str(data), "--out", str(run)]
    train += ["--model", "resnet18_dda", "--epochs", "1", "--image-size", "32", "--batch-size", "16", "--no-tta"]
    train += ["--no-progress", "--synthetic-train", "112", "--synthetic-val", "28", "--synthetic-test", "70"]
    code, _, err = run_main(train_run.main, train, capfd)
    assert code == 0, err
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
    cmd = ["predict", str(run / "best.pt"), str(images), "--out", str(out)]
    code, _, err = run_main(ddakern.cli.main, cmd + ["--detector", "none", "--no-progress", "--device", "cpu"], capfd)
    assert code == 0, err
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
