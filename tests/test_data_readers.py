"""Readers for FER2013, FERPlus and RAF-DB on small generated files, including every malformed input."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reader_splits import load_splits

from train.data import FER2013_CLASSES, FERPLUS_CLASSES, RAFDB_CLASSES, DataError
from train.data.fer2013 import ferplus_label
from train.data.layouts import load_layout, stratified_holdout


def _pixels(value: int) -> str:
    return " ".join([str(value)] * 2304)


def _write_fer(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join(f"{e},{p},{u}" for e, p, u in rows)
    path.write_text("emotion,pixels,Usage\n" + body + "\n")
    return path


GOOD_ROWS = [
    ("0", _pixels(10), "Training"),
    ("3", _pixels(20), "Training"),
    ("6", _pixels(30), "PublicTest"),
    ("5", _pixels(40), "PrivateTest"),
]


def test_fer2013_splits_labels_and_pixels(tmp_path: Path) -> None:
    _write_fer(tmp_path / "fer2013.csv", GOOD_ROWS)
    s = load_splits("fer2013", tmp_path)
    assert [len(s[k]) for k in ("train", "val", "test")] == [2, 1, 1]
    assert s["train"].kind == "array" and s["train"].images.shape == (2, 48, 48)
    assert s["train"].images.dtype == np.uint8
    assert s["train"].labels.tolist() == [0, 3] and s["train"].labels.dtype == np.int64
    assert s["train"].images[1].min() == s["train"].images[1].max() == 20
    assert s["test"].labels.tolist() == [5] and s["val"].labels.tolist() == [6]
    assert s["train"].class_names == FER2013_CLASSES and s["train"].skipped == 0


def test_fer2013_pixels_are_row_major(tmp_path: Path) -> None:
    values = np.arange(2304) % 256
    _write_fer(
        tmp_path / "f.csv",
        [("1", " ".join(map(str, values)), u) for u in ("Training", "PublicTest", "PrivateTest")],
    )
    img = load_splits("fer2013", tmp_path / "f.csv")["train"].images[0]
    assert img[0, 5] == 5 and img[1, 0] == 48 % 256


def test_fer2013_found_in_subfolder_and_missing_lists_places(tmp_path: Path) -> None:
    _write_fer(tmp_path / "fer2013" / "fer2013.csv", GOOD_ROWS)
    assert len(load_splits("fer2013", tmp_path)["train"]) == 2
    with pytest.raises(DataError, match=r"not found; looked for: .*fer2013\.csv"):
        load_splits("fer2013", tmp_path / "nowhere")


@pytest.mark.parametrize(
    "row, problem",
    [
        (("2", " ".join(["1"] * 2303), "Training"), r"pixels has 2303 values, expected 2304"),
        (("2", _pixels(1).replace("1", "x", 1), "Training"), r"non-integer pixel 'x'"),
        (("2", _pixels(1).replace("1", "1.5", 1), "Training"), r"non-integer pixel '1.5'"),
        (("2", _pixels(256), "Training"), r"pixel value 256 out of range"),
        (("2", _pixels(1), "Validation"), r"unknown Usage 'Validation'"),
        (("7", _pixels(1), "Training"), r"label 7 out of range 0\.\.6"),
        (("-1", _pixels(1), "Training"), r"label -1 out of range"),
        (("a", _pixels(1), "Training"), r"emotion 'a' is not an integer"),
    ],
)
def test_fer2013_bad_row_names_file_and_line(tmp_path: Path, row: tuple[str, str, str], problem: str) -> None:
    path = _write_fer(tmp_path / "fer2013.csv", GOOD_ROWS[:2] + [row] + GOOD_ROWS[2:])
    with pytest.raises(DataError, match=rf"fer2013\.csv line 4: {problem}") as info:
        load_splits("fer2013", tmp_path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_fer2013_missing_column(tmp_path: Path) -> None:
    (tmp_path / "fer2013.csv").write_text("emotion,pixels\n0,1 2\n")
    with pytest.raises(DataError, match=r"fer2013\.csv line 1: header lacks column\(s\) Usage"):
        load_splits("fer2013", tmp_path)


def test_fer2013_skip_bad_counts_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = [("1", "1 2 3", "Training"), ("9", _pixels(0), "PrivateTest"), ("1", _pixels(0), "Nope")]
    _write_fer(tmp_path / "fer2013.csv", GOOD_ROWS + bad)
    with caplog.at_level(logging.WARNING, logger="train.data"):
        s = load_splits("fer2013", tmp_path, skip_bad=True)
    assert [len(s[k]) for k in ("train", "val", "test")] == [2, 1, 1]
    assert s["train"].skipped == 2 and s["test"].skipped == 1 and s["val"].skipped == 0
    assert "skipped 3 malformed row(s)" in caplog.text and "line 6" in caplog.text


# ---------------------------------------------------------------- FERPlus

FERPLUS_HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"


def _write_ferplus(root: Path, votes: list[tuple[str, str, list[int]]]) -> None:
    lines = [FERPLUS_HEADER] + [f"{u},{name},{','.join(map(str, v))}" for u, name, v in votes]
    (root / "fer2013new.csv").write_text("\n".join(lines) + "\n")


def test_ferplus_majority_vote_drops_unknown_nf_and_faceless(tmp_path: Path) -> None:
    usages = ["Training"] * 6 + ["PublicTest", "PrivateTest"]
    _write_fer(tmp_path / "fer2013.csv", [("0", _pixels(i), u) for i, u in enumerate(usages)])
    _write_ferplus(
        tmp_path,
        [
            ("Training", "fer0.png", [0, 8, 0, 0, 0, 0, 0, 0, 2, 0]),  # happiness
            (
                "Training",
                "fer1.png",
                [4, 0, 0, 4, 2, 0, 0, 0, 0, 0],
            ),  # tie neutral/sadness -> neutral (first)
            ("Training", "fer2.png", [0, 0, 0, 0, 0, 0, 0, 3, 5, 2]),  # unknown wins -> dropped
            ("Training", "fer3.png", [0, 0, 0, 0, 0, 0, 0, 0, 0, 10]),  # NF -> dropped
            ("Training", "", [0, 0, 0, 0, 0, 0, 0, 0, 0, 10]),  # no image name -> dropped
            ("Training", "fer5.png", [0, 0, 0, 0, 0, 0, 0, 5, 5, 0]),  # tie contempt/unknown -> contempt
            ("PublicTest", "fer6.png", [0, 0, 0, 0, 0, 6, 4, 0, 0, 0]),  # disgust
            ("PrivateTest", "fer7.png", [0, 0, 1, 0, 0, 0, 9, 0, 0, 0]),  # fear
        ],
    )
    s = load_splits("ferplus", tmp_path)
    assert s["train"].labels.tolist() == [1, 0, 7]
    assert s["train"].images[:, 0, 0].tolist() == [0, 1, 5]  # pixels come from the matching fer2013 rows
    assert s["val"].labels.tolist() == [5] and s["test"].labels.tolist() == [6]
    assert s["train"].class_names == FERPLUS_CLASSES and len(FERPLUS_CLASSES) == 8
    assert s["train"].skipped == 0


def test_ferplus_label_rule() -> None:
    assert ferplus_label(np.array([0, 0, 3, 3, 0, 0, 0, 0, 0, 0])) == 2
    assert ferplus_label(np.zeros(10, np.int64)) is None
    assert ferplus_label(np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 2])) is None


def test_ferplus_bad_rows(tmp_path: Path) -> None:
    _write_fer(tmp_path / "fer2013.csv", GOOD_ROWS)
    ok = [0, 9, 0, 0, 0, 0, 0, 0, 1, 0]
    _write_ferplus(
        tmp_path,
        [("Training", "a", ok), ("Training", "b", ok), ("Training", "c", ok), ("PrivateTest", "d", ok)],
    )
    with pytest.raises(DataError, match=r"fer2013new\.csv line 4: Usage 'Training' differs from fer2013\.csv line 4"):
        load_splits("ferplus", tmp_path)
    _write_ferplus(tmp_path, [("Training", "a", ok), ("Training", "b", [1, "x", 0, 0, 0, 0, 0, 0, 0, 0])])
    with pytest.raises(DataError, match=r"2 data rows but fer2013\.csv has 4"):
        load_splits("ferplus", tmp_path)
    bad = [
        ("Training", "a", ok),
        ("Training", "b", [1, "x"] + [0] * 8),
        ("PublicTest", "c", ok),
        ("PrivateTest", "d", ok),
    ]
    _write_ferplus(tmp_path, bad)
    with pytest.raises(DataError, match=r"fer2013new\.csv line 3: vote count 'x' is not a non-negative integer"):
        load_splits("ferplus", tmp_path)
    s = load_splits("ferplus", tmp_path, skip_bad=True)
    assert len(s["train"]) == 1 and s["train"].skipped == 1


def test_ferplus_missing_label_file(tmp_path: Path) -> None:
    _write_fer(tmp_path / "fer2013.csv", GOOD_ROWS)
    with pytest.raises(DataError, match=r"FERPlus label file not found; looked for: .*fer2013new\.csv"):
        load_splits("ferplus", tmp_path)


# ---------------------------------------------------------------- RAF-DB

RAF_LINES = [
    "train_00001.jpg 1",
    "train_00002.jpg 4",
    "train_00003.jpg 7",
    "test_0001.jpg 2",
    "test_0002.jpg 6",
]


def _jpeg(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 12, 3), value, np.uint8)).save(path, quality=95)


def _write_raf(label_file: Path, image_dir: Path, lines: list[str] = RAF_LINES) -> None:
    label_file.parent.mkdir(parents=True, exist_ok=True)
    label_file.write_text("\n".join(lines) + "\n")
    for i, line in enumerate(lines):
        _jpeg(image_dir / f"{Path(line.split()[0]).stem}_aligned.jpg", (10 * i) % 256)


@pytest.mark.parametrize(
    "label_rel, images_rel",
    [
        ("basic/EmoLabel/list_patition_label.txt", "basic/Image/aligned"),
        ("list_patition_label.txt", "aligned/aligned"),
        ("list_patition_label.txt", "aligned"),
        ("rafdb/list_patition_label.txt", "rafdb/aligned"),
    ],
)
def test_rafdb_layouts(tmp_path: Path, label_rel: str, images_rel: str) -> None:
    _write_raf(tmp_path / label_rel, tmp_path / images_rel)
    s = load_splits("rafdb", tmp_path)
    assert s["train"].kind == "files" and s["train"].labels.tolist() == [0, 3, 6]
    assert s["test"].labels.tolist() == [1, 5]
    assert [f.name for f in s["train"].files] == [f"train_0000{i}_aligned.jpg" for i in (1, 2, 3)]
    assert all(f.parent == tmp_path / images_rel for f in s["train"].files)
    assert s["val"] is s["test"]  # community protocol
    assert s["train"].class_names == RAFDB_CLASSES


def test_rafdb_not_found_lists_places(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"list_patition_label\.txt not found; looked for: ") as info:
        load_splits("rafdb", tmp_path)
    assert str(tmp_path / "basic" / "EmoLabel" / "list_patition_label.txt") in str(info.value)
    assert str(tmp_path / "list_patition_label.txt") in str(info.value)
    (tmp_path / "list_patition_label.txt").write_text("train_00001.jpg 1\n")
    with pytest.raises(DataError, match=r"image folder not found; looked for: .*aligned/aligned, .*aligned"):
        load_splits("rafdb", tmp_path)


@pytest.mark.parametrize(
    "line, problem",
    [
        ("train_00009.jpg 8", r"label 8 out of range 1\.\.7"),
        ("train_00009.jpg 0", r"label 0 out of range 1\.\.7"),
        ("train_00009.jpg happy", r"label 'happy' is not an integer"),
        ("val_00009.jpg 3", r"image name 'val_00009.jpg' does not start with train_ or test_"),
        ("train_00009.jpg", r"expected '<name> <label>'"),
        ("train_00009.jpg 3", r"image train_00009_aligned\.jpg missing from"),
    ],
)
def test_rafdb_bad_line_names_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    _write_raf(tmp_path / "list_patition_label.txt", tmp_path / "aligned")
    with open(tmp_path / "list_patition_label.txt", "a") as fh:
        fh.write(line + "\n")
    with pytest.raises(DataError, match=rf"list_patition_label\.txt line 6: {problem}"):
        load_splits("rafdb", tmp_path)
    s = load_splits("rafdb", tmp_path, skip_bad=True)
    assert len(s["train"]) + len(s["test"]) == 5 and s["train"].skipped + s["test"].skipped == 1


def test_rafdb_unreadable_jpeg(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write_raf(tmp_path / "list_patition_label.txt", tmp_path / "aligned")
    (tmp_path / "aligned" / "train_00002_aligned.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "aligned" / "test_0002_aligned.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 20)
    with pytest.raises(DataError, match=r"line 2: image .*train_00002_aligned\.jpg: not a JPEG"):
        load_splits("rafdb", tmp_path)
    good = (tmp_path / "aligned" / "train_00001_aligned.jpg").read_bytes()
    (tmp_path / "aligned" / "train_00001_aligned.jpg").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"line 1: image .*train_00001_aligned\.jpg: truncated JPEG"):
        load_splits("rafdb", tmp_path)
    with caplog.at_level(logging.WARNING, logger="train.data"):
        s = load_splits("rafdb", tmp_path, skip_bad=True)
    assert s["train"].skipped == 2 and s["test"].skipped == 1
    assert len(s["train"]) == 1 and len(s["test"]) == 1
    assert "skipped 3 malformed sample(s)" in caplog.text


def test_rafdb_holdout_is_stratified_and_seeded(tmp_path: Path) -> None:
    lines = [f"train_{i:05d}.jpg {i % 7 + 1}" for i in range(1, 71)] + ["test_0001.jpg 1"]
    _write_raf(tmp_path / "list_patition_label.txt", tmp_path / "aligned", lines)
    a, b, c = (load_layout(tmp_path, family="rafdb", holdout=0.2, seed=s).splits for s in (5, 5, 6))
    assert len(a["val"]) == 14 and len(a["train"]) == 56 and len(a["test"]) == 1
    assert np.bincount(a["val"].labels).tolist() == [2] * 7
    assert not set(a["val"].files) & set(a["train"].files)
    assert a["val"].files == b["val"].files and a["val"].files != c["val"].files


def test_stratified_holdout_validation() -> None:
    keep, hold = stratified_holdout(np.array([0, 0, 1, 1]), 0.5, 1)
    assert sorted(np.concatenate([keep, hold]).tolist()) == [0, 1, 2, 3] and len(hold) == 2
    with pytest.raises(ValueError, match="holdout"):
        stratified_holdout(np.array([0, 1]), 1.5, 1)


def test_unknown_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown layout 'affectnet-zip'; expected one of fer2013-csv, "):
        load_layout(tmp_path, layout="affectnet-zip")
