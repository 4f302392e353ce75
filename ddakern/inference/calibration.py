"""Face images of a training run's data folder, read without the engine: int8 calibration and checks.

`python -m ddakern export --quantize int8` calibrates on the run's own training images and checks the
int8 model against fp32 on its test images. The library does not import the engine (`train`), so the
data folder is read plainly, which covers the layouts whose split is visible in the files:

- a FER2013-style CSV (a `pixels` column of 48x48 gray values): rows whose `Usage` is `Training`
  (train) or `PrivateTest` (test), as train.run splits FER2013 / FERPlus and the built-in synthetic
  set; without a `Usage` column (Kaggle's train.csv / test.csv) the file name says the split;
- image files (recursive): those under a folder, or named, starting with "train" (RAF-DB's
  `train_00001_aligned.jpg`, class folders under `train/`, AffectNet's `train_set/`) or "test" (then
  "val" where nothing says "test"); a folder of images that names no split is all training images.

Images are taken evenly spaced over the split (deterministic), decoded to RGB uint8: the crops the
model sees (face crops, as training used them), preprocessed like `predict` does.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ddakern.builtin_set import builtin_cache
from ddakern.inference.images import read_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
CSV_SPLITS = {"train": ("training",), "test": ("privatetest",)}
SPLIT_PREFIXES = {"train": ("train",), "test": ("test", "val")}


class CalibrationError(ValueError):
    """No usable images where calibration images were looked for; one line naming the place."""


def run_data_root(ckpt: dict[str, Any]) -> Path | None:
    """The data folder a train.run checkpoint was trained on: its config's data_root; for a built-in-set
    recipe (synthetic, synthetic-modern) without one, where train.run caches that set (builtin_cache of the
    run's --synthetic-difficulty)."""
    config = ckpt.get("config") or {}
    if config.get("data_root"):
        return Path(config["data_root"])
    recipe = str(config.get("recipe") or ckpt.get("recipe") or "")
    if recipe == "synthetic" or recipe.startswith("synthetic-"):  # the built-in set (synthetic-modern too)
        return builtin_cache(config.get("synthetic_difficulty") or "easy")
    return None


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [h.strip().lower() for h in next(csv.reader(f), [])]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def pixel_csvs(source: Path) -> list[Path]:
    """FER2013-style CSVs (with a `pixels` column): `source` itself, or those under it (sorted)."""
    files = [source] if source.is_file() else sorted(source.rglob("*.csv")) if source.is_dir() else []
    return [f for f in files if "pixels" in _csv_header(f)]


def _csv_rows(path: Path, split: str) -> Iterator[str]:
    """The `pixels` strings of one split's rows (Usage column, else the file name names the split)."""
    header = _csv_header(path)
    pixels, usage = header.index("pixels"), header.index("usage") if "usage" in header else None
    if usage is None and not path.stem.lower().startswith(split):
        return
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        next(rows, None)
        for row in rows:
            if len(row) > pixels and (usage is None or row[usage].strip().lower() in CSV_SPLITS[split]):
                yield row[pixels]


def _gray48(text: str) -> np.ndarray | None:
    values = np.array(text.split(), dtype=np.float64)
    side = int(round(values.size**0.5))
    if side * side != values.size or side == 0 or values.min() < 0 or values.max() > 255:
        return None
    return np.repeat(values.astype(np.uint8).reshape(side, side, 1), 3, axis=2)


def _evenly(n: int, limit: int | None) -> list[int]:
    """`limit` indices spread evenly over range(n) (all of them when limit is None or >= n)."""
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, limit).round().astype(int).tolist()))


def _split_files(files: list[Path], root: Path, split: str) -> list[Path]:
    """Files whose path below root has a folder or name starting with the split's first prefix that matches."""
    for prefix in SPLIT_PREFIXES[split]:
        chosen = [f for f in files if any(p.lower().startswith(prefix) for p in f.relative_to(root).parts)]
        if chosen:
            return chosen
    return []


def face_images(source: Path, split: str = "train", limit: int | None = 256) -> tuple[list[np.ndarray], str]:
    """(RGB uint8 images of `split` under `source`, a description of what was read); see the module doc.

    A folder of images that names no split counts as training images (and has no test images)."""
    source = Path(source)
    if not source.exists():
        raise CalibrationError(f"{source}: not found")
    for path in pixel_csvs(source):
        count = sum(1 for _ in _csv_rows(path, split))
        if count:
            keep = set(_evenly(count, limit))
            faces = [_gray48(t) for i, t in enumerate(_csv_rows(path, split)) if i in keep]
            faces = [f for f in faces if f is not None]
            return faces, f"{len(faces)} {split} rows of {path}"
    if source.is_file():
        files, root = [source], source.parent
    else:
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        root = source
    chosen = _split_files(files, root, split)
    if not chosen and split == "train" and not _split_files(files, root, "test"):
        chosen = files  # a plain folder of faces
    faces, bad = [], 0
    picked = [chosen[i] for i in _evenly(len(chosen), limit)]
    for f in picked:
        try:
            faces.append(read_image(f))
        except ValueError as e:
            bad += 1
            print(f"skipped: {e}", file=sys.stderr)
    note = f" ({bad} unreadable)" if bad else ""
    return faces, f"{len(faces)} {split} images under {source}{note}"
