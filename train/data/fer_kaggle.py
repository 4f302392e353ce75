"""FER2013 as Kaggle distributes it: image folders, the competition's `icml_face_data.csv`, and the
`train.csv` / `test.csv` pair (whose test half has no labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DataError
from .fer2013 import FER_SIZE, _check_emotion, _parse_pixels, _report, read_fer2013
from .samples import FER2013_CLASSES, SampleSet
from .scan import read_class_folders, subdirs
from .textlines import csv_records

ICML_CSV = "icml_face_data.csv"
TRAIN_CSV, TEST_CSV = "train.csv", "test.csv"
FOLDER_SPLITS = ("train", "test")


def fer_folder_order(split_dir: Path) -> list[tuple[str, str]] | None:
    """[(folder, class)] in FER2013 label order when `split_dir` holds exactly the 7 FER2013 class
    folders (any case), else None. Alphabetical order (neutral=4) is never used."""
    folders = subdirs(split_dir)
    by_lower = {f.lower(): f for f in folders}
    if len(folders) != len(FER2013_CLASSES) or set(by_lower) != set(FER2013_CLASSES):
        return None
    return [(by_lower[c], c) for c in FER2013_CLASSES]


def is_fer_folders(root: Path) -> bool:
    """True for `root/train/<7 FER classes>/` and `root/test/<7 FER classes>/`."""
    return all(fer_folder_order(Path(root) / s) is not None for s in FOLDER_SPLITS)


def read_fer_folders(root: Path) -> dict[str, SampleSet]:
    """{"train", "test"} from the Kaggle folders, labels in FER2013 order (angry ... surprise, neutral)."""
    root = Path(root)
    out: dict[str, SampleSet] = {}
    for split in FOLDER_SPLITS:
        order = fer_folder_order(root / split)
        if order is None:
            want = ", ".join(sorted(FER2013_CLASSES))
            raise DataError(f"{root / split}: expected the FER2013 class folders {want}")
        out[split] = read_class_folders(root / split, order)
    return out


def read_icml_csv(path: Path, *, skip_bad: bool = False) -> dict[str, SampleSet]:
    """`icml_face_data.csv` (header `emotion, Usage, pixels`, leading spaces): FER2013's splits."""
    return read_fer2013(path, skip_bad=skip_bad)


def _read_labelled_rows(path: Path, skip_bad: bool) -> SampleSet:
    """`emotion,pixels` rows (Kaggle train.csv) as a gray 48x48 array set."""
    images: list[np.ndarray] = []
    labels: list[int] = []
    bad: list[tuple[int, str]] = []
    for line, rec, problem in csv_records(path, ("emotion", "pixels")):
        emotion = image = None
        if rec is not None:
            emotion, problem = _check_emotion(rec["emotion"])
        if problem is None:
            image, problem = _parse_pixels(rec["pixels"])
        if problem is not None:
            bad.append((line, problem))
            continue
        images.append(image)
        labels.append(emotion)
    _report(path, bad, skip_bad)
    stack = np.stack(images) if images else np.zeros((0, FER_SIZE, FER_SIZE), np.uint8)
    return SampleSet("array", stack, None, np.asarray(labels, np.int64), FER2013_CLASSES, len(bad), path)


def csv_has_labels(path: Path) -> bool:
    """True when a Kaggle test.csv carries an `emotion` column (the competition's copy does not)."""
    try:
        with open(path, encoding="utf-8") as fh:
            header = fh.readline()
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror})") from None
    return "emotion" in [h.strip() for h in header.split(",")]


def read_kaggle_csv_pair(root: Path, *, skip_bad: bool = False) -> dict[str, SampleSet]:
    """{"train"} (and {"test"} when test.csv is labelled) from the Kaggle train.csv / test.csv pair.

    The competition's test.csv has pixels only: it is refused for evaluation, and the caller holds out a
    test split from train instead (see train.data.layouts).
    """
    root = Path(root)
    train_csv, test_csv = root / TRAIN_CSV, root / TEST_CSV
    if not train_csv.is_file():
        if test_csv.is_file() and not csv_has_labels(test_csv):
            raise DataError(unlabelled_test_message(test_csv))
        raise DataError(f"{train_csv}: not found")
    out = {"train": _read_labelled_rows(train_csv, skip_bad)}
    if test_csv.is_file() and csv_has_labels(test_csv):
        out["test"] = _read_labelled_rows(test_csv, skip_bad)
    return out


def unlabelled_test_message(path: Path) -> str:
    """The one line that refuses Kaggle's unlabelled FER2013 test.csv for evaluation."""
    return (
        f"{path}: no emotion column (Kaggle's unlabelled competition test set), so it cannot be used for "
        "evaluation; icml_face_data.csv or fer2013.csv have the labelled PublicTest/PrivateTest splits"
    )
