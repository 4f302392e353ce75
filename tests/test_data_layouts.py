"""Every supported layout, generated as real files, read through layout detection and the real readers:
class order against the published label tables, hold-out splits, and one-line errors naming the file."""

from __future__ import annotations

import logging
import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from layout_files import (
    AFFECTNET_HEADER,
    FER_FOLDERS,
    class_folders,
    fer_pixels,
    jpeg,
    make_affectnet_npy,
    make_affectnet_official,
    make_fer_folders,
    make_icml_csv,
    make_kaggle_csv_pair,
    make_rafdb_kaggle,
)

from train.data import FER2013_CLASSES, RAFDB_CLASSES, DataError
from train.data.labels import AFFECTNET7_CLASSES, AFFECTNET8_CLASSES
from train.data.layouts import describe, detect_layout, holdout_record, load_layout

# Published tables (data-layouts.md), written out here rather than imported.
FER_TABLE = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
RAFDB_TABLE = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
AFFECTNET_TABLE = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")


def _folder_labels(samples) -> dict[str, set[int]]:
    """{parent folder name: labels given to its files}."""
    out: dict[str, set[int]] = {}
    for f, y in zip(samples.files, samples.labels):
        out.setdefault(Path(f).parent.name, set()).add(int(y))
    return out


def test_fer_folders_use_fer2013_order_and_a_recorded_stratified_holdout(tmp_path: Path) -> None:
    make_fer_folders(tmp_path, per_class=10, test_per_class=2)
    layout = load_layout(tmp_path, family="fer2013", seed=5)
    assert layout.name == "fer2013-folders" and layout.val_from_train
    tr, val, te = (layout.splits[k] for k in ("train", "val", "test"))
    assert tr.class_names == FER2013_CLASSES == FER_TABLE
    assert {k: v for k, v in _folder_labels(te).items()} == {c: {FER_TABLE.index(c)} for c in FER_FOLDERS}
    assert (len(tr), len(val), len(te)) == (63, 7, 14)
    assert np.bincount(val.labels).tolist() == [1] * 7  # 10% of each class
    assert not set(map(str, val.files)) & set(map(str, tr.files))
    again = load_layout(tmp_path, family="fer2013", seed=5).splits["val"].files
    other = load_layout(tmp_path, family="fer2013", seed=6).splits["val"].files
    assert again == val.files and other != val.files
    record = holdout_record(layout)
    assert record["val"]["held_out"] == {"fraction": 0.1, "seed": 5, "of": "train"} and len(record["val"]["files"]) == 7
    line = describe(layout)
    assert "\n" not in line and "layout fer2013-folders" in line and "train 63 (angry 9," in line
    assert "test 14 (angry 2, disgust 2, fear 2, happy 2, sad 2, surprise 2, neutral 2)" in line


def test_icml_csv_with_leading_space_header(tmp_path: Path) -> None:
    make_icml_csv(tmp_path, per_usage=7)
    layout = load_layout(tmp_path, family="fer2013")
    assert layout.name == "fer2013-icml-csv" and not layout.val_from_train
    assert [len(layout.splits[k]) for k in ("train", "val", "test")] == [7, 7, 7]
    assert layout.splits["train"].labels.tolist() == list(range(7))
    assert layout.splits["train"].class_names == FER_TABLE


def test_kaggle_csv_pair_refuses_the_unlabelled_test_csv(tmp_path: Path, caplog) -> None:
    make_kaggle_csv_pair(tmp_path, rows=70)
    with caplog.at_level(logging.WARNING, logger="train.data"):
        layout = load_layout(tmp_path, family="fer2013")
    assert layout.name == "fer2013-kaggle-csv"
    refused = [r.message for r in caplog.records if "test.csv: no emotion column" in r.message]
    assert len(refused) == 1 and "cannot be used for evaluation" in refused[0]
    assert [len(layout.splits[k]) for k in ("train", "val", "test")] == [56, 7, 7]
    (tmp_path / "train.csv").unlink()
    with pytest.raises(DataError, match=r"test\.csv: no emotion column .* cannot be used for evaluation"):
        load_layout(tmp_path, family="fer2013")


def test_kaggle_train_csv_bad_row_names_file_and_line(tmp_path: Path) -> None:
    make_kaggle_csv_pair(tmp_path, rows=14)
    with open(tmp_path / "train.csv", "a") as fh:
        fh.write("9," + " ".join(["1"] * 2304) + "\n")
    with pytest.raises(DataError, match=r"train\.csv line 16: label 9 out of range 0\.\.6$"):
        load_layout(tmp_path, family="fer2013")


def test_rafdb_kaggle_folders_are_official_labels(tmp_path: Path) -> None:
    make_rafdb_kaggle(tmp_path, per_class=10)
    layout = load_layout(tmp_path, family="rafdb")
    assert layout.name == "rafdb-kaggle" and layout.val_from_train
    te = layout.splits["test"]
    assert te.class_names == RAFDB_CLASSES == RAFDB_TABLE
    assert _folder_labels(te) == {str(i): {i - 1} for i in range(1, 8)}  # folder 1 = surprise ... 7 = neutral
    assert len(layout.splits["train"]) + len(layout.splits["val"]) == 70 and len(layout.splits["val"]) == 7


BAD_ROWS = {  # family: (maker, per class, label file, line number of the appended row), [(row, problem)]
    "rafdb": (
        (make_rafdb_kaggle, 2, "train_labels.csv", 16),
        [
            ("train_10000_aligned.jpg", r"expected 'image,label' with an integer label, got .*"),
            ("train_10000_aligned.jpg,8", r"label 8 out of range 1\.\.7"),
            ("train_99999_aligned.jpg,1", r"image train_99999_aligned\.jpg missing from .*"),
            ("train_10000_aligned.jpg,2", r".*DATASET/train/1/train_10000_aligned\.jpg is in folder 1 but labelled 2"),
        ],
    ),
    "affectnet": (
        (make_affectnet_official, 1, "training.csv", 13),
        [
            ("t0/img_0_0.jpg,1,2,3", r"4 fields, the header has 9"),
            ("t0/none.jpg,16,16,32,32,1;2,0,0.1,0.2", r"image .*Manually_Annotated_Images/t0/none\.jpg missing"),
            ("t0/img_0_0.jpg,16,16,32,32,1;2,11,0.1,0.2", r"expression 11 out of range 0\.\.10"),
            ("t0/img_0_0.jpg,16,16,0,32,1;2,1,0.1,0.2", r"face box \[16, 16, 0, 32\] is empty or negative"),
        ],
    ),
}


@pytest.mark.parametrize("family, row, problem", [(f, *case) for f, (_, cases) in BAD_ROWS.items() for case in cases])
def test_bad_label_row_is_one_line(tmp_path: Path, family: str, row: str, problem: str) -> None:
    make, per_class, labels, line = BAD_ROWS[family][0]
    make(tmp_path, per_class=per_class)
    with open(tmp_path / labels, "a") as fh:
        fh.write(row + "\n")
    with pytest.raises(DataError, match=rf"{re.escape(labels)} line {line}: {problem}$") as info:
        load_layout(tmp_path, family=family)
    assert "\n" not in str(info.value)
    assert load_layout(tmp_path, family=family, skip_bad=True, holdout=0).splits["train"].skipped == 1


@pytest.mark.parametrize("num_classes, table", [(8, AFFECTNET_TABLE), (7, AFFECTNET_TABLE[:7])])
def test_affectnet_official_classes_boxes_and_dropped_rows(tmp_path: Path, caplog, num_classes, table) -> None:
    make_affectnet_official(tmp_path, per_class=3)
    with caplog.at_level(logging.INFO, logger="train.data"):
        layout = load_layout(tmp_path, family="affectnet", num_classes=num_classes, holdout=0)
    assert layout.name == "affectnet"
    te = layout.splits["test"]
    assert te.class_names == table == (AFFECTNET8_CLASSES if num_classes == 8 else AFFECTNET7_CLASSES)
    assert te.labels.tolist() == sorted(te.labels.tolist()) == [c for c in range(num_classes) for _ in range(3)]
    assert all(Path(f).name.startswith(f"img_{y}_") for f, y in zip(te.files, te.labels))
    assert te.boxes.tolist()[0] == [16, 16, 32, 32]
    dropped = [r.message for r in caplog.records if "validation.csv: dropped" in r.message]
    expect = "1 none (8), 1 uncertain (9), 1 no-face (10)"
    assert len(dropped) == 1 and expect in dropped[0] and (num_classes == 8) == ("contempt" not in dropped[0])
    assert layout.splits["val"] is te  # holdout 0: community protocol


def test_affectnet_header_is_checked(tmp_path: Path) -> None:
    make_affectnet_official(tmp_path, per_class=1)
    text = (tmp_path / "training.csv").read_text().replace("expression", "emotion", 1)
    (tmp_path / "training.csv").write_text(text)
    with pytest.raises(DataError, match=r"training\.csv line 1: header lacks column\(s\) expression"):
        load_layout(tmp_path, family="affectnet")
    assert AFFECTNET_HEADER.split(",")[6] == "expression"


def test_affectnet_npy_release(tmp_path: Path) -> None:
    make_affectnet_npy(tmp_path, per_class=2)
    layout = load_layout(tmp_path, family="affectnet", num_classes=7, holdout=0)
    assert layout.name == "affectnet-npy"
    te = layout.splits["test"]
    assert te.class_names == AFFECTNET_TABLE[:7] and te.labels.tolist() == list(range(7))
    assert [Path(f).name for f in te.files] == [f"{i}.jpg" for i in range(7)]
    np.save(tmp_path / "train_set" / "annotations" / "3_exp.npy", np.array("12"))
    with pytest.raises(DataError, match=r"3_exp\.npy: expression 12 out of range 0\.\.10$"):
        load_layout(tmp_path, family="affectnet")
    (tmp_path / "train_set" / "annotations" / "3_exp.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match=r"3_exp\.npy: unreadable expression"):
        load_layout(tmp_path, family="affectnet")
    np.save(tmp_path / "train_set" / "annotations" / "3_exp.npy", np.array(3))  # an int works too
    (tmp_path / "train_set" / "images" / "5.jpg").unlink()
    with pytest.raises(DataError, match=r"5_exp\.npy: image .*images/5\.jpg missing"):
        load_layout(tmp_path, family="affectnet", skip_bad=False)


def test_class_folders_map_onto_the_canonical_set(tmp_path: Path) -> None:
    ck = ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")  # CK+ folder names
    class_folders(tmp_path / "ck", ck, 10)
    layout = load_layout(tmp_path / "ck", family="folders")
    assert layout.name == "folders" and not layout.val_from_train
    tr = layout.splits["train"]
    assert tr.class_names == ("angry", "disgust", "fear", "happy", "sad", "surprise", "contempt")
    assert _folder_labels(tr)["sadness"] == {4} and _folder_labels(tr)["contempt"] == {6}
    assert [len(layout.splits[k]) for k in ("train", "val", "test")] == [56, 7, 7]  # seeded 80/10/10


def test_class_folders_unknown_names_need_classes(tmp_path: Path) -> None:
    class_folders(tmp_path / "train", ("cat", "dog"), 3)
    class_folders(tmp_path / "test", ("cat", "dog"), 2)
    with pytest.raises(DataError, match=r"class folder\(s\) cat, dog are not FER expression names; .*--classes"):
        load_layout(tmp_path, family="folders")
    layout = load_layout(tmp_path, family="folders", classes=["dog", "cat"])
    assert layout.splits["test"].class_names == ("dog", "cat")
    assert _folder_labels(layout.splits["test"]) == {"dog": {0}, "cat": {1}}
    with pytest.raises(DataError, match=r"--classes names 'cow' but there is no such class folder"):
        load_layout(tmp_path, family="folders", classes=["dog", "cow"])


def test_empty_class_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    make_fer_folders(tmp_path, per_class=2, test_per_class=1)
    for f in (tmp_path / "test" / "disgust").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"test/disgust: class folder has no images"):
        load_layout(tmp_path, family="fer2013")


def test_detection_descends_into_a_single_folder_and_refuses_ambiguity(tmp_path: Path) -> None:
    make_fer_folders(tmp_path / "archive", per_class=2, test_per_class=1)
    name, base = detect_layout(tmp_path, "fer2013")
    assert (name, base) == ("fer2013-folders", tmp_path / "archive")
    make_icml_csv(tmp_path / "archive")
    with pytest.raises(DataError, match=r"more than one layout matches \(fer2013-icml-csv, fer2013-folders\)"):
        load_layout(tmp_path / "archive", family="fer2013")
    assert load_layout(tmp_path / "archive", layout="fer2013-icml-csv").name == "fer2013-icml-csv"
    with pytest.raises(DataError, match=r"no known data layout found"):
        detect_layout(tmp_path / "archive" / "train" / "angry", "rafdb")


def test_jpegs_are_decodable(tmp_path: Path) -> None:
    from PIL import Image

    with Image.open(jpeg(tmp_path / "a.jpg", 48, 3, gray=True)) as im:
        assert im.size == (48, 48) and im.format == "JPEG"


def test_layouts_command_prints_one_line(tmp_path: Path, capsys) -> None:
    from train.data.layouts import main

    make_rafdb_kaggle(tmp_path / "raf", per_class=10)
    assert main([str(tmp_path / "raf")]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("data: layout rafdb-kaggle in ") and "\n" not in out and "surprise 9" in out
    assert main([str(tmp_path / "missing")]) == 1
    assert capsys.readouterr().err.strip().endswith("missing: data folder does not exist")


def _fer2013_csv(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [f"{i % 7},{fer_pixels(i % 7, i)},{u}" for u in ("Training", "PublicTest", "PrivateTest") for i in range(7)]
    (folder / "fer2013.csv").write_text("\n".join(["emotion,pixels,Usage", *rows]) + "\n")
    return folder / "fer2013.csv"


def test_a_lone_fer2013_csv_is_fer2013_only_ferplus_needs_its_own_label_file(tmp_path: Path, capsys) -> None:
    from train.data.layouts import main

    csv_file = _fer2013_csv(tmp_path / "fer")
    for root in (tmp_path / "fer", csv_file):  # the folder, or the file itself
        assert detect_layout(root) == ("fer2013-csv", root)
        assert main([str(root)]) == 0 and capsys.readouterr().out.startswith("data: layout fer2013-csv in ")
        with pytest.raises(DataError, match="no known data layout found"):
            detect_layout(root, "ferplus")
    header = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
    (tmp_path / "fer" / "fer2013new.csv").write_text(header + "\n")
    assert detect_layout(tmp_path / "fer", "ferplus") == ("ferplus-csv", tmp_path / "fer")


def _packed(path: Path, member: Path) -> Path:
    """`member` packed into `path`; a name without suffix holds a zip (recognised by its first bytes)."""
    if path.suffix in (".zip", ""):
        with zipfile.ZipFile(path, "w") as z:
            z.write(member, member.name)
    elif path.name.endswith((".tar", ".tar.gz")):
        with tarfile.open(path, "w:gz" if path.suffix == ".gz" else "w") as t:
            t.add(member, member.name)
    else:  # a 7z: its signature is enough to be recognised
        path.write_bytes(b"7z\xbc\xaf\x27\x1c" + bytes(26))
    return path


@pytest.mark.parametrize("name", ["fer2013.zip", "fer2013.tar", "fer2013.tar.gz", "fer2013.7z", "download"])
def test_an_archive_as_data_root_is_one_line_unpack_it_first(tmp_path: Path, capsys, name: str) -> None:
    from train.data.layouts import main

    packed = _packed(tmp_path / name, _fer2013_csv(tmp_path / "src"))
    line = f"{packed} is an archive; unpack it first (unzip / tar -xf / 7z x) and give the unpacked folder"
    for family in (None, "fer2013", "ferplus", "rafdb"):
        with pytest.raises(DataError) as e:
            load_layout(packed, family=family)
        assert str(e.value) == line
    with pytest.raises(DataError, match="unpack it first"):
        load_layout(packed, layout="fer2013-csv")
    assert main([str(packed)]) == 1 and capsys.readouterr().err.strip() == f"error: {line}"
    if packed.suffix:  # a folder holding only the download
        (tmp_path / "holds").mkdir()
        packed.rename(tmp_path / "holds" / name)
        with pytest.raises(DataError, match=f"holds: no known data layout, but archive.s. {name}: unpack them"):
            detect_layout(tmp_path / "holds")
