"""The built-in synthetic face set: determinism, real-format round trip, idempotent atomic writes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from layout_files import read_family
from PIL import Image

from train.data import FER2013_CLASSES, RAFDB_CLASSES, DataError, make_synthetic
from train.data.faces import EXPRESSIONS, draw_face
from train.data.synthetic import _FER_LABEL, _RAF_LABEL

SMALL = dict(n_train=14, n_val=7, n_test=7)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".synthetic")
    }


def test_deterministic_by_seed(tmp_path: Path) -> None:
    a = _tree(make_synthetic(tmp_path / "a", seed=3, **SMALL))
    b = _tree(make_synthetic(tmp_path / "b", seed=3, **SMALL))
    c = _tree(make_synthetic(tmp_path / "c", seed=4, **SMALL))
    assert a == b
    assert a.keys() == c.keys() and a["fer2013/fer2013.csv"] != c["fer2013/fer2013.csv"]
    assert a["rafdb/aligned/train_00001_aligned.jpg"] != c["rafdb/aligned/train_00001_aligned.jpg"]


def test_round_trip_through_real_readers(tmp_path: Path) -> None:
    root = make_synthetic(tmp_path, seed=1, **SMALL)
    header = (root / "fer2013" / "fer2013.csv").read_text().splitlines()[0]
    assert header == "emotion,pixels,Usage"
    fer = read_family("fer2013", root / "fer2013")
    assert [len(fer[k]) for k in ("train", "val", "test")] == [14, 7, 7]
    assert fer["train"].images.shape == (14, 48, 48) and fer["train"].class_names == FER2013_CLASSES
    assert np.bincount(fer["train"].labels, minlength=7).tolist() == [2] * 7  # balanced
    assert fer["train"].images.std() > 10  # real pictures, not flat
    raf = read_family("rafdb", root)  # found under root/rafdb, flat layout
    assert [len(raf[k]) for k in ("train", "test")] == [14, 7]
    assert raf["train"].class_names == RAFDB_CLASSES
    assert np.bincount(raf["test"].labels, minlength=7).tolist() == [1] * 7
    with Image.open(raf["train"].files[0]) as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (100, 100)
    labels = (root / "rafdb" / "list_patition_label.txt").read_text().split()
    assert labels[:2] == ["train_00001.jpg", labels[1]] and 1 <= int(labels[1]) <= 7


def test_label_maps_follow_each_dataset_order() -> None:
    for e in EXPRESSIONS:
        assert FER2013_CLASSES[_FER_LABEL[e]] == e
        assert RAFDB_CLASSES[_RAF_LABEL[e]].startswith(e[:3])  # anger/angry, happiness/happy, ...
    assert _FER_LABEL["happy"] == 3 and _RAF_LABEL["happy"] == 3 and _FER_LABEL["surprise"] == 5
    assert _RAF_LABEL["surprise"] == 0


def test_expressions_differ_and_faces_vary() -> None:
    rng = np.random.default_rng(0)
    faces = {e: draw_face(e, np.random.default_rng(7), 48) for e in EXPRESSIONS}
    # same identity, pose and lighting (same seed): only the expression geometry differs
    for e in EXPRESSIONS:
        if e != "neutral":
            assert np.abs(faces[e].astype(int) - faces["neutral"].astype(int)).max() > 60, e
    a, b = draw_face("happy", rng, 48), draw_face("happy", rng, 48)
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8 and not np.array_equal(a, b)


# sha256 of draw_face for seeds 0-2 x the 7 expressions at 48 px (recorded before draw_face was split
# into parts): a change here means the built-in synthetic set, and every result on it, changed too.
FACES_SHA256 = "0d8994504a2762ae7cd478153d402db896c89a720fbeb71246177e57175efddb"


def test_faces_are_bit_identical_to_the_recorded_set() -> None:
    h = hashlib.sha256()
    for seed in range(3):
        rng = np.random.default_rng(seed)
        for e in EXPRESSIONS:
            h.update(draw_face(e, rng, 48).tobytes())
    assert h.hexdigest() == FACES_SHA256, "draw_face output changed (RNG draw order or geometry)"


def test_reuse_when_complete_and_regenerate_on_change(tmp_path: Path) -> None:
    root = make_synthetic(tmp_path, seed=2, **SMALL)
    csv = root / "fer2013" / "fer2013.csv"
    stamp = csv.stat().st_mtime_ns
    assert json.loads((root / "synthetic.json").read_text())["seed"] == 2
    make_synthetic(tmp_path, seed=2, **SMALL)
    assert csv.stat().st_mtime_ns == stamp  # reused
    make_synthetic(tmp_path, seed=2, n_train=21, n_val=7, n_test=7)
    assert len(read_family("fer2013", root)["train"]) == 21
    assert len(list((root / "rafdb" / "aligned").iterdir())) == 28
    assert not [p for p in root.iterdir() if p.name.startswith(".synthetic-")]  # temp folder gone
    (root / "rafdb" / "aligned" / "test_00001_aligned.jpg").unlink()  # incomplete -> rebuilt
    make_synthetic(tmp_path, seed=2, n_train=21, n_val=7, n_test=7)
    assert (root / "rafdb" / "aligned" / "test_00001_aligned.jpg").is_file()


def test_refuses_to_overwrite_foreign_data(tmp_path: Path) -> None:
    (tmp_path / "fer2013").mkdir()
    (tmp_path / "fer2013" / "fer2013.csv").write_text("real data")
    with pytest.raises(DataError, match="not a synthetic set"):
        make_synthetic(tmp_path, **SMALL)
    assert (tmp_path / "fer2013" / "fer2013.csv").read_text() == "real data"
    with pytest.raises(ValueError, match="n_train"):
        make_synthetic(tmp_path / "x", n_train=0, n_val=1, n_test=1)


def test_hard_set_has_its_exact_label_noise_recorded_and_a_clean_test_split(tmp_path: Path) -> None:
    root = make_synthetic(tmp_path, seed=1, n_train=42, n_val=21, n_test=21, difficulty="hard")
    record = json.loads((root / "label_noise.json").read_text())
    assert set(record["fer2013"]) == {"Training", "PublicTest"} and set(record["rafdb"]) == {"train"}
    fer = read_family("fer2013", root / "fer2013")
    for split, usage, n in (("train", "Training", 42), ("val", "PublicTest", 21)):
        changed, true = record["fer2013"][usage]["changed"], record["fer2013"][usage]["true_labels"]
        assert len(changed) == round(0.15 * n)  # the known rate, exactly
        labels = fer[split].labels.copy()
        assert all(labels[i] != t for i, t in zip(changed, true))  # each one really is another class
        labels[changed] = true
        assert np.bincount(labels, minlength=7).tolist() == [n // 7] * 7  # undone: the balanced clean labels
    assert np.bincount(fer["test"].labels, minlength=7).tolist() == [3] * 7  # test: clean
    easy = read_family("fer2013", make_synthetic(tmp_path / "easy", seed=1, n_train=42, n_val=21, n_test=21))
    assert not np.array_equal(easy["train"].images, fer["train"].images)
    assert json.loads((root / "synthetic.json").read_text())["label_noise"]["rate"] == 0.15


def test_the_built_in_set_is_a_layout_like_the_others(tmp_path: Path, capsys) -> None:
    from train.data.layouts import load_layout, main

    root = make_synthetic(tmp_path / "hard", seed=1, n_train=14, n_val=7, n_test=7, difficulty="hard")
    assert main([str(root)]) == 0
    line = capsys.readouterr().out
    assert "layout synthetic" in line and "hard set, 15% of train/val labels changed" in line
    found = load_layout(root)  # detected: its FER2013 and RAF-DB copies are not rival layouts
    assert found.name == "synthetic" and not found.val_from_train
    assert [len(found.splits[k]) for k in ("train", "val", "test")] == [14, 7, 7]
    assert found.facts == {"builtin_set": "hard", "label_noise": json.loads((root / "synthetic.json").read_text())[
        "label_noise"]}  # fmt: skip
    assert load_layout(make_synthetic(tmp_path / "easy", seed=1, **SMALL)).facts["builtin_set"] == "easy"


def test_hard_faces_are_deterministic_and_show_their_expression() -> None:
    from train.data.faces_hard import draw_hard_face

    a = draw_hard_face("happy", np.random.default_rng(5), 48)
    assert a.shape == (48, 48, 3) and np.array_equal(a, draw_hard_face("happy", np.random.default_rng(5), 48))
    faces = {e: draw_hard_face(e, np.random.default_rng(9), 48).astype(int) for e in EXPRESSIONS}
    assert all(np.abs(faces[e] - faces["neutral"]).max() > 40 for e in EXPRESSIONS if e != "neutral")
