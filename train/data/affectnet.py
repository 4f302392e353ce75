"""AffectNet: the official `Manually_Annotated_Images/` + `training.csv` / `validation.csv` (face boxes
cropped by the loaders), and the `train_set/images` + `train_set/annotations/<id>_exp.npy` release.

Expression 0..7 = neutral, happy, sad, surprise, fear, disgust, anger, contempt; 8..10 (none, uncertain,
no-face) are not emotions: dropped and counted. AffectNet-7 also drops contempt. Community protocol:
train on the training set, report on the validation set (here the "test" split).
"""

from __future__ import annotations

import ast
import logging
import os
from pathlib import Path

import numpy as np

from .affectnet_csv import read_rows
from .errors import DataError
from .labels import AFFECTNET7_CLASSES, AFFECTNET8_CLASSES, AFFECTNET_NON_EMOTIONS
from .samples import SampleSet
from .scan import image_files

log = logging.getLogger("train.data")

IMAGES = "Manually_Annotated_Images"
CSV_OF_SPLIT = {"train": "training.csv", "test": "validation.csv"}
NPY_SPLITS = {"train": "train_set", "test": "val_set"}


def affectnet_classes(num_classes: int) -> tuple[str, ...]:
    """The class names of AffectNet-7 or AffectNet-8."""
    if num_classes not in (7, 8):
        raise DataError(f"AffectNet has 7 or 8 classes, got {num_classes}")
    return AFFECTNET8_CLASSES if num_classes == 8 else AFFECTNET7_CLASSES


def find_affectnet_official(root: Path) -> tuple[Path, Path, Path] | None:
    """(images folder, training.csv, validation.csv) of the official release under root, else None."""
    root = Path(root)
    for images in (root / IMAGES, root / "Manually_Annotated" / IMAGES):
        if not images.is_dir():
            continue
        for lists in (root, root / "Manually_Annotated_file_lists", images.parent):
            train, val = lists / CSV_OF_SPLIT["train"], lists / CSV_OF_SPLIT["test"]
            if train.is_file() and val.is_file():
                return images, train, val
    return None


def _existing(images: Path) -> set[str]:
    """Every image under `images` as a '/'-joined path relative to it (one scandir pass)."""
    prefix = len(os.fspath(images)) + 1
    return {f[prefix:].replace(os.sep, "/") for f in image_files(images)}


def read_affectnet_csv(
    csv_path: Path, images: Path, num_classes: int, existing: set[str], *, skip_bad: bool = False
) -> SampleSet:
    """One split of the official release: image files, labels, face boxes (x, y, w, h).

    `existing`: the images under `images` ('/'-joined relative paths); read by affectnet_csv (1M rows in
    seconds, a malformed row still named by file and line)."""
    classes = affectnet_classes(num_classes)
    rows = read_rows(Path(csv_path), Path(images), num_classes, existing)
    _report(csv_path, rows.bad, skip_bad)
    if rows.dropped:
        what = ", ".join(
            f"{n} {AFFECTNET_NON_EMOTIONS.get(e, 'contempt')} ({e})" for e, n in sorted(rows.dropped.items())
        )
        log.info(f"{csv_path}: dropped {sum(rows.dropped.values())} non-emotion/unused row(s): {what}")
    prefix = os.fspath(images) + os.sep
    files = list(map(prefix.__add__, rows.rels))  # str: a Path per row costs seconds at 1M rows
    labels = np.concatenate(rows.labels) if rows.labels else np.zeros(0, np.int64)
    boxes = np.concatenate(rows.boxes) if rows.boxes else np.zeros((0, 4), np.int64)
    return SampleSet("files", None, files, labels, classes, len(rows.bad), csv_path, boxes if len(files) else None)


def read_affectnet_official(
    images: Path, train_csv: Path, val_csv: Path, num_classes: int, *, skip_bad: bool = False
) -> dict[str, SampleSet]:
    """{"train": training.csv, "test": validation.csv} of the official release."""
    existing = _existing(Path(images))
    return {
        "train": read_affectnet_csv(Path(train_csv), Path(images), num_classes, existing, skip_bad=skip_bad),
        "test": read_affectnet_csv(Path(val_csv), Path(images), num_classes, existing, skip_bad=skip_bad),
    }


def _report(source: Path, bad: list[str], skip_bad: bool) -> None:
    if bad and not skip_bad:
        raise DataError(bad[0])
    if bad:
        log.warning(f"{source}: skipped {len(bad)} bad sample(s) (first: {bad[0]})")


def find_affectnet_npy(root: Path) -> Path | None:
    """The folder holding train_set/ and val_set/ with images/ and annotations/, else None."""
    root = Path(root)
    ok = all((root / s / "images").is_dir() and (root / s / "annotations").is_dir() for s in NPY_SPLITS.values())
    return root if ok else None


_NPY_HEADERS: dict[bytes, tuple[np.dtype, tuple[int, ...]]] = {}


def read_npy_scalar(path: str) -> object:
    """The single value of a tiny .npy file (never unpickles; headers parsed once per distinct header).

    np.load costs ~50 us per file; AffectNet's release has one _exp.npy per image (~290,000).
    """
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:6] != b"\x93NUMPY" or data[6] != 1:
        arr = np.load(path, allow_pickle=False)  # other format versions: the slow, safe path
        return arr.reshape(-1)[0] if arr.size == 1 else arr
    n = int.from_bytes(data[8:10], "little")
    header = data[10 : 10 + n]
    if header not in _NPY_HEADERS:
        meta = ast.literal_eval(header.decode("latin1"))  # a dict literal; literal_eval runs no code
        if meta.get("fortran_order") or "O" in str(meta["descr"]):
            raise ValueError("unsupported .npy content (object or Fortran order)")
        _NPY_HEADERS[header] = (np.dtype(meta["descr"]), tuple(meta["shape"]))
    dtype, shape = _NPY_HEADERS[header]
    arr = np.frombuffer(data, dtype, count=int(np.prod(shape)), offset=10 + n)
    if arr.size != 1:
        raise ValueError(f"expected one value, found shape {shape}")
    return arr[0]


def _npy_split(split_dir: Path, num_classes: int, skip_bad: bool) -> SampleSet:
    images, annotations = split_dir / "images", split_dir / "annotations"
    by_id = {Path(f).stem: f for f in image_files(images, recursive=False)}
    with os.scandir(annotations) as it:
        exp = {e.name[: -len("_exp.npy")]: e.path for e in it if e.name.endswith("_exp.npy")}
    files, labels, bad = [], [], []
    dropped = 0
    for key in sorted(set(by_id) | set(exp), key=lambda k: (len(k), k)):
        if key not in exp:
            bad.append(f"{by_id[key]}: annotation {annotations / (key + '_exp.npy')} missing")
            continue
        if key not in by_id:
            bad.append(f"{exp[key]}: image {images / key}.jpg missing")
            continue
        try:
            value = read_npy_scalar(exp[key])
            text = value.decode() if isinstance(value, bytes) else str(value)
            expression = int(text.strip())
        except (ValueError, OSError) as e:
            bad.append(f"{exp[key]}: unreadable expression ({e})")
            continue
        if not 0 <= expression <= max(AFFECTNET_NON_EMOTIONS):
            bad.append(f"{exp[key]}: expression {expression} out of range 0..{max(AFFECTNET_NON_EMOTIONS)}")
        elif expression >= num_classes:
            dropped += 1
        else:
            files.append(by_id[key])
            labels.append(expression)
    _report(annotations, bad, skip_bad)
    if dropped:
        log.info(f"{annotations}: dropped {dropped} image(s) with expression >= {num_classes} (not used)")
    return SampleSet(
        "files", None, files, np.asarray(labels, np.int64), affectnet_classes(num_classes), len(bad), annotations
    )


def read_affectnet_npy(root: Path, num_classes: int, *, skip_bad: bool = False) -> dict[str, SampleSet]:
    """{"train": train_set, "test": val_set} of the images + annotations/*_exp.npy release."""
    return {split: _npy_split(Path(root) / d, num_classes, skip_bad) for split, d in NPY_SPLITS.items()}
