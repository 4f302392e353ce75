"""train.prepare on real photos: prepare crops the box predict crops (the library's detector; where it
finds the astronaut's face is test_predict_api's), crops keep the class layout, faceless and unreadable
images are reported, a second run resumes, and no temporary file stays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")

from ddakern.inference.checkpoint import ModelSpec  # noqa: E402
from ddakern.inference.detect import Detection, largest_face  # noqa: E402
from ddakern.inference.images import read_image  # noqa: E402
from ddakern.inference.predictor import Predictor  # noqa: E402
from train.prepare import main, prepare  # noqa: E402


def _photos(root: Path) -> Path:
    face = skdata.astronaut()  # 512 x 512 RGB, one frontal face at about (176, 66) 95 x 95
    (root / "train" / "happy").mkdir(parents=True)
    (root / "train" / "sad").mkdir(parents=True)
    Image.fromarray(face).save(root / "train" / "happy" / "astronaut.jpg", quality=92)
    Image.fromarray(face[:, ::-1]).save(root / "train" / "sad" / "mirrored.png")
    Image.fromarray(np.full((160, 160, 3), 120, np.uint8)).save(root / "train" / "sad" / "wall.jpg")
    (root / "train" / "sad" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    return root


def test_prepare_crops_the_box_predict_crops(tmp_path: Path) -> None:
    """One detector, one box convention: unaligned at its own resolution, prepare's crop of a photo is
    pixel for pixel the crop predict classifies (same detector defaults, same square, same border)."""
    root = tmp_path / "photos"
    (root / "happy").mkdir(parents=True)
    Image.fromarray(skdata.astronaut()[:, 40:]).save(root / "happy" / "astronaut.png")
    prepare(root, tmp_path / "crops", size=0, margin=0.9, align=False, workers=1, progress=False)
    predictor = Predictor(None, ModelSpec("resnet18", ("happy",), 64, "unit"), margin=0.9)  # detection only
    ((_, box, expected),) = predictor.detect(read_image(root / "happy" / "astronaut.png"))
    assert box[1] < 0  # the margin reaches past the top edge: the border is filled the same way
    got = np.asarray(Image.open(tmp_path / "crops" / "happy" / "astronaut.png"))
    np.testing.assert_array_equal(got, expected)
    small, large = Detection((0, 0, 40, 40), 9.0), Detection((50, 50, 100, 100), 1.0)
    assert largest_face([small, large, small]) is large and largest_face([]) is None  # prepare keeps the largest


def test_prepare_crops_reports_and_resumes(tmp_path: Path, capsys) -> None:
    root, out = _photos(tmp_path / "photos"), tmp_path / "crops"
    assert main(["--data-root", str(root), "--out", str(out), "--size", "96", "--no-progress"]) == 0
    crop = out / "train" / "happy" / "astronaut.jpg"
    with Image.open(crop) as im:
        assert im.size == (96, 96) and im.format == "JPEG"
    with Image.open(out / "train" / "sad" / "mirrored.png") as im:
        assert im.format == "PNG"
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["written"] == 2 and report["no_face"] == ["train/sad/wall.jpg"]
    assert report["unreadable"] == ["train/sad/broken.jpg"]
    assert (out / "no_face.txt").read_text().splitlines() == ["train/sad/broken.jpg", "train/sad/wall.jpg"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    stamp = crop.stat().st_mtime_ns
    again = prepare(root, out, size=96, progress=False)
    assert (again.written, again.existing) == (0, 2) and crop.stat().st_mtime_ns == stamp
    assert "2 crops written" in capsys.readouterr().out


def test_prepare_bad_folders_are_one_line(tmp_path: Path, capsys) -> None:
    assert main(["--data-root", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err.strip().endswith("none: data folder does not exist")
    root = _photos(tmp_path / "p")
    assert main(["--data-root", str(root), "--out", str(root / "inside")]) == 1
    assert "must lie outside the data root" in capsys.readouterr().err
    assert main(["--data-root", str(root), "--out", str(tmp_path / "o"), "--min-face", "-3"]) == 2
    assert capsys.readouterr().err.startswith("error: --min-face: min face must be > 0")
    assert main(["--data-root", str(root), "--out", str(tmp_path / "o"), "--detector", "yunet"]) == 1
    assert capsys.readouterr().err == "error: detector 'yunet' needs its ONNX file (--yunet-model PATH)\n"
