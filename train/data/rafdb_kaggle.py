"""RAF-DB (basic) as the Kaggle copy lays it out: `DATASET/{train,test}/{1..7}/*.jpg`, folder = official
label 1..7, with `train_labels.csv` / `test_labels.csv` (`image,label`) beside `DATASET/` (or inside it)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from .errors import DataError
from .samples import RAFDB_CLASSES, SampleSet
from .scan import image_files, subdirs

log = logging.getLogger("train.data")

SPLITS = ("train", "test")
LABEL_FOLDERS = tuple(str(i) for i in range(1, len(RAFDB_CLASSES) + 1))


def find_rafdb_kaggle(root: Path) -> Path | None:
    """The `DATASET` folder (root/DATASET, or root itself) whose train/ and test/ hold folders 1..7."""
    for base in (Path(root) / "DATASET", Path(root)):
        if all(set(subdirs(base / s)) == set(LABEL_FOLDERS) for s in SPLITS):
            return base
    return None


def _label_csv(dataset: Path, split: str) -> Path | None:
    for p in (dataset.parent / f"{split}_labels.csv", dataset / f"{split}_labels.csv"):
        if p.is_file():
            return p
    return None


def _scan_split(split_dir: Path) -> dict[str, tuple[str, int]]:
    """{file name: (path, label 0..6)} of the label folders; an empty label folder is an error."""
    found: dict[str, tuple[str, int]] = {}
    for label, folder in enumerate(LABEL_FOLDERS):
        files = image_files(split_dir / folder)
        if not files:
            raise DataError(f"{split_dir / folder}: class folder has no images")
        found.update((Path(f).name, (f, label)) for f in files)
    return found


def _rows(path: Path, found: dict[str, tuple[str, int]]) -> tuple[list[tuple[str, int]], list[str]]:
    """(good (path, label) pairs, bad-row messages) of a label CSV checked against the folders."""
    good: list[tuple[str, int]] = []
    bad: list[str] = []
    try:
        fh = open(path, newline="", encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror})") from None
    with fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        if "image" not in header or "label" not in header:
            raise DataError(f"{path} line 1: header needs columns image,label (found: {', '.join(header)})")
        reader.fieldnames = header
        for rec in reader:
            where = f"{path} line {reader.line_num}"
            name, text = (rec.get("image") or "").strip(), (rec.get("label") or "").strip()
            if not name or not text.lstrip("-").isdigit():
                bad.append(f"{where}: expected 'image,label' with an integer label, got {name!r},{text!r}")
            elif not 1 <= int(text) <= len(RAFDB_CLASSES):
                bad.append(f"{where}: label {text} out of range 1..{len(RAFDB_CLASSES)}")
            elif name not in found:
                bad.append(f"{where}: image {name} missing from {path.parent}")
            elif found[name][1] != int(text) - 1:
                bad.append(f"{where}: {found[name][0]} is in folder {found[name][1] + 1} but labelled {text}")
            else:
                good.append((found[name][0], int(text) - 1))
    return good, bad


def read_rafdb_kaggle(dataset: Path, *, skip_bad: bool = False) -> dict[str, SampleSet]:
    """{"train", "test"} of the Kaggle copy; labels 0..6 in RAF-DB order (file label minus one)."""
    dataset = Path(dataset)
    out: dict[str, SampleSet] = {}
    for split in SPLITS:
        found = _scan_split(dataset / split)
        label_csv = _label_csv(dataset, split)
        if label_csv is None:  # folders alone carry the labels
            pairs, bad = sorted(found.values()), []
        else:
            pairs, bad = _rows(label_csv, found)
        if bad and not skip_bad:
            raise DataError(bad[0])
        if bad:
            log.warning(f"{label_csv}: skipped {len(bad)} bad row(s) (first: {bad[0]})")
        files = [p for p, _ in pairs]
        labels = np.asarray([lab for _, lab in pairs], np.int64)
        out[split] = SampleSet("files", None, files, labels, RAFDB_CLASSES, len(bad), label_csv or dataset / split)
    return out
