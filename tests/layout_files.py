"""Small copies of every supported data-set layout, written as real files in the real formats (JPEGs that
PIL and DALI decode, CSVs with the published headers), for the layout tests and the end-to-end runs."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

FER_FOLDERS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")  # as Kaggle names them
AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
)


def jpeg(path: Path, size: int = 48, label: int = 0, gray: bool = False, seed: int = 0) -> Path:
    """A JPEG whose brightness encodes `label` (learnable) plus noise."""
    rng = np.random.default_rng(seed)
    shape = (size, size) if gray else (size, size, 3)
    base = 30 + 25 * label
    pixels = np.clip(base + rng.normal(0, 12, shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=90)
    return path


def truncate(path: Path) -> Path:
    """Cut a file to half its length (a truncated JPEG)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def class_folders(split_dir: Path, names: Sequence[str], per_class: int, size: int = 48, gray: bool = False) -> None:
    """split_dir/<name>/<name>_<i>.jpg; the image brightness follows the folder's position in `names`."""
    for label, name in enumerate(names):
        for i in range(per_class):
            jpeg(split_dir / name / f"{name}_{i:03d}.jpg", size, label, gray, seed=label * 1000 + i)


def make_fer_folders(root: Path, per_class: int = 6, test_per_class: int = 2) -> Path:
    """Kaggle FER2013 folders: train/<class>/ and test/<class>/ with 48x48 gray JPEGs."""
    class_folders(root / "train", FER_FOLDERS, per_class, gray=True)
    class_folders(root / "test", FER_FOLDERS, test_per_class, gray=True)
    return root


def fer_pixels(label: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(str(v) for v in np.clip(30 + 25 * label + rng.normal(0, 12, 2304), 0, 255).astype(int))


def make_icml_csv(root: Path, per_usage: int = 7) -> Path:
    """icml_face_data.csv with the competition's header `emotion, Usage, pixels` (leading spaces)."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["emotion, Usage, pixels"]
    for usage in ("Training", "PublicTest", "PrivateTest"):
        lines += [f"{i % 7},{usage},{fer_pixels(i % 7, i)}" for i in range(per_usage)]
    path = root / "icml_face_data.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def make_kaggle_csv_pair(root: Path, rows: int = 70) -> Path:
    """train.csv (emotion,pixels) and the unlabelled test.csv (pixels)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.csv").write_text(
        "emotion,pixels\n" + "".join(f"{i % 7},{fer_pixels(i % 7, i)}\n" for i in range(rows))
    )
    (root / "test.csv").write_text("pixels\n" + "".join(f"{fer_pixels(0, i)}\n" for i in range(5)))
    return root


def make_rafdb_kaggle(root: Path, per_class: int = 3) -> Path:
    """DATASET/{train,test}/{1..7}/<split>_<n>_aligned.jpg and {train,test}_labels.csv beside DATASET/."""
    for split, n in (("train", per_class), ("test", max(1, per_class // 2))):
        rows = []
        for label in range(1, 8):
            for i in range(n):
                name = f"{split}_{label}{i:04d}_aligned.jpg"
                jpeg(root / "DATASET" / split / str(label) / name, 100, label - 1, seed=label * 100 + i)
                rows.append(f"{name},{label}")
        (root / f"{split}_labels.csv").write_text("image,label\n" + "\n".join(rows) + "\n")
    return root


def _affectnet_rows(root: Path, split: str, per_class: int, image_size: int) -> list[list[str]]:
    rows = []
    for expression in range(11):
        for i in range(per_class if expression < 8 else 1):
            rel = f"{split[:1]}{expression}/img_{expression}_{i}.jpg"
            # the face box is the centre half; outside it the image is dark
            jpeg(root / "Manually_Annotated_Images" / rel, image_size, min(expression, 7), seed=expression * 50 + i)
            box = [image_size // 4, image_size // 4, image_size // 2, image_size // 2]
            landmarks = ";".join(f"{v:.2f}" for v in np.linspace(10, 50, 136))
            rows.append([rel, *map(str, box), landmarks, str(expression), "0.25", "-0.5"])
    return rows


def make_affectnet_official(root: Path, per_class: int = 3, image_size: int = 64) -> Path:
    """Manually_Annotated_Images/<dir>/<file>.jpg with training.csv / validation.csv (the real header),
    including contempt (7) and the non-emotions 8, 9, 10."""
    for split, name in (("train", "training.csv"), ("val", "validation.csv")):
        rows = _affectnet_rows(root, split, per_class, image_size)
        with open(root / name, "w", newline="") as fh:
            fh.write(AFFECTNET_HEADER + "\n")
            csv.writer(fh).writerows(rows)
    return root


def make_affectnet_npy(root: Path, per_class: int = 3, image_size: int = 64) -> Path:
    """train_set/ and val_set/ with images/<id>.jpg and annotations/<id>_exp.npy (a string, as released)."""
    for split, n in (("train_set", per_class), ("val_set", max(1, per_class // 2))):
        key = 0
        for expression in range(8):
            for _ in range(n):
                jpeg(root / split / "images" / f"{key}.jpg", image_size, expression, seed=key)
                (root / split / "annotations").mkdir(parents=True, exist_ok=True)
                np.save(root / split / "annotations" / f"{key}_exp.npy", np.array(str(expression)))
                np.save(root / split / "annotations" / f"{key}_val.npy", np.array("0.1"))
                key += 1
    return root


def read_family(family: str, root: Path, *, skip_bad: bool = False) -> dict:
    """{"train", "val", "test"} of the `family` copy under `root`, read as a run reads it (the layout detected
    and read through train.data.layouts); RAF-DB without a hold-out (val = test), so train is the label
    file's whole train split."""
    from train.data.layouts import load_layout

    return load_layout(root, family=family, holdout=0, skip_bad=skip_bad).splits
