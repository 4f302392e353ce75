"""End-to-end CPU runs of train.run on a tiny synthetic set: learning, the run folder, the NaN guard."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ddakern.inference.checkpoint import model_of
from train import checkpoint
from train.run import main

TINY = [
    "--model", "resnet18", "--image-size", "32", "--batch-size", "12",
    "--synthetic-train", "84", "--synthetic-val", "28", "--synthetic-test", "28",
    "--loader", "torch", "--num-workers", "0", "--no-progress", "--device", "cpu",
]  # fmt: skip


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_short_run_learns_and_writes_the_run_folder(data_root, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    argv = [*TINY, "--data-root", str(data_root), "--out", str(out), "--epochs", "6", "--optimizer", "adam"]
    argv += ["--augment", "none", "--no-tta", "--dropout", "0"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'summary.json'}" in printed
    history = read_jsonl(out / "metrics.jsonl")
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5, 6]
    first, last = history[0], history[-1]
    # training accuracy is the signal here: 84 images and 42 steps leave BatchNorm's running statistics
    # (and so validation accuracy) unsettled
    assert last["train_loss"] < 0.5 * first["train_loss"]
    assert last["train_acc"] >= 65.0 and last["train_acc"] > first["train_acc"] + 40.0
    for name in ("config.json", "confusion_matrix.png", "curves.png", "summary.json", "best.pt", "last.pt"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["selected_epoch"] == max(history, key=lambda r: (r["val_acc"], -r["epoch"]))["epoch"]
    assert summary["test"]["images"] == 28 and summary["test_accuracy_tta"] is None
    assert set(summary["test"]["per_class_accuracy"]) == set(summary["class_names"])
    assert summary["peak_memory"]["mib"] > 0 and summary["train_images_per_s"] > 0
    assert "PublicTest" in summary["protocol"]
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["model"] == "resnet18" and config["out"] == str(out)
    ckpt = checkpoint.load(out / "best.pt")
    assert ckpt["epoch"] == summary["selected_epoch"] and ckpt["step"] == 0
    assert (ckpt["model_name"], ckpt["num_classes"], ckpt["image_size"], ckpt["normalize"]) == (
        "resnet18",
        7,
        32,
        "unit",
    )
    assert ckpt["recipe"] == "synthetic" and len(ckpt["class_names"]) == 7
    for key in ("optimizer", "scheduler", "scaler", "rng", "config", "dda_stages", "best_metric", "global_step"):
        assert key in ckpt
    model, _ = model_of(ckpt, out / "best.pt")
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(data_root, tmp_path, capsys) -> None:
    out = tmp_path / "nan"
    # 84 / 12 = 7 steps per epoch: global step 9 is epoch 2, step 2
    argv = [*TINY, "--data-root", str(data_root), "--out", str(out), "--epochs", "3", "--debug-nan-at-step", "9"]
    assert main([*argv, "--no-tta"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: non-finite loss at epoch 2, step 2 (global step 9)"), err[-1]
    last = checkpoint.load(out / "last.pt")
    assert (last["epoch"], last["step"], last["global_step"]) == (1, 0, 7)
    assert all(torch.isfinite(t).all() for t in last["model"].values() if t.is_floating_point())
    assert len(read_jsonl(out / "metrics.jsonl")) == 1
    assert not (out / "summary.json").exists()
    assert not math.isnan(last["best_metric"])
