"""train.run end to end on generated copies of the Kaggle FER2013 folders and the official AffectNet release
(tiny: one epoch, 32 px), and both loaders over the new layouts: face-box crops, a truncated JPEG named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from layout_files import jpeg, make_affectnet_official, make_fer_folders, truncate

from train.data import DataError, build_loader, dali_available
from train.data.layouts import load_layout
from train.run import main

TINY = [
    "--model", "resnet18", "--image-size", "32", "--batch-size", "8", "--epochs", "1", "--no-tta",
    "--workers", "0", "--no-progress", "--device", "cpu", "--augment", "none",
]  # fmt: skip
LOADERS = ["torch"] + (["dali"] if dali_available() else [])


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def test_run_on_kaggle_fer_folders(tmp_path: Path, capsys) -> None:
    make_fer_folders(tmp_path / "fer", per_class=5, test_per_class=2)
    out = tmp_path / "run"
    argv = [*TINY, "--recipe", "fer2013", "--data-root", str(tmp_path / "fer"), "--out", str(out), "--loader", "torch"]
    assert main(argv) == 0
    s = _summary(out)
    assert s["layout"] == "fer2013-folders" and s["class_names"][-1] == "neutral"
    assert s["samples"] == {"train": 28, "val": 7, "test": 14} and "hold-out of train" in s["protocol"]
    assert 0.0 <= s["test"]["mean_class_accuracy"] <= 100.0
    # both protocols: selected on the hold-out (test_accuracy) and on test (the published figure)
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    on_test = s["selected_on_test"]
    assert on_test["test_accuracy"] == max(r["test_acc"] for r in history) >= s["test_accuracy"] - 1e-9
    assert 1 <= on_test["epoch"] <= s["epochs_run"]
    split = json.loads((out / "split.json").read_text(encoding="utf-8"))
    assert split["val"]["held_out"]["seed"] == 113 and len(split["val"]["files"]) == 7
    assert "data: layout fer2013-folders" in capsys.readouterr().err


@pytest.mark.parametrize("loader", LOADERS)
def test_run_on_affectnet_official_balanced(tmp_path: Path, loader: str) -> None:
    make_affectnet_official(tmp_path / "an", per_class=4)
    out = tmp_path / "run"
    argv = [*TINY, "--recipe", "affectnet7", "--data-root", str(tmp_path / "an"), "--out", str(out)]
    assert main([*argv, "--loader", loader, "--balanced", "--dali-threads", "1"]) == 0
    s = _summary(out)
    assert s["layout"] == "affectnet" and s["class_names"] == ["neutral", "happy", "sad", "surprise", "fear",
                                                                "disgust", "anger"]  # fmt: skip
    assert s["samples"]["test"] == 28 and s["loader"] == loader


@pytest.mark.parametrize("loader", LOADERS)
def test_loaders_crop_the_face_box(tmp_path: Path, loader: str) -> None:
    make_affectnet_official(tmp_path, per_class=1, image_size=64)
    test = load_layout(tmp_path, family="affectnet", holdout=0).splits["test"]
    kw = dict(train=False, batch_size=4, image_size=32, augment=None, loader=loader, num_threads=1)
    cropped = torch.cat([x for x, _ in build_loader(test, **kw)])
    test.boxes = None
    whole = torch.cat([x for x, _ in build_loader(test, **kw)])
    assert cropped.shape == whole.shape == (8, 3, 32, 32)
    assert not torch.allclose(cropped, whole)  # the crop is the centre half, resized up


@pytest.mark.parametrize("loader", LOADERS)
def test_truncated_jpeg_is_one_line_naming_it(tmp_path: Path, loader: str) -> None:
    make_fer_folders(tmp_path, per_class=10, test_per_class=2)
    bad = truncate(sorted((tmp_path / "test" / "happy").iterdir())[0])
    test = load_layout(tmp_path, family="fer2013").splits["test"]
    with pytest.raises(DataError, match=rf"^{bad}: .*truncated") as info:
        for _ in build_loader(test, train=False, batch_size=4, image_size=32, augment=None, loader=loader):
            pass
    assert "\n" not in str(info.value)


def test_run_stops_with_the_bad_file(tmp_path: Path, capsys) -> None:
    make_fer_folders(tmp_path / "fer", per_class=5, test_per_class=2)
    bad = truncate(sorted((tmp_path / "fer" / "train" / "sad").iterdir())[3])
    argv = [*TINY, "--recipe", "fer2013", "--data-root", str(tmp_path / "fer"), "--out", str(tmp_path / "r")]
    assert main([*argv, "--loader", "torch"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {bad}: cannot decode image") and "Traceback" not in err


def test_png_and_gray_images_decode(tmp_path: Path) -> None:
    from PIL import Image

    Image.open(jpeg(tmp_path / "a.jpg", 48, 1, gray=True)).save(tmp_path / "a.png")
    assert np.asarray(Image.open(tmp_path / "a.png")).shape == (48, 48)
