"""Reader for RAF-DB (basic): the official layout and the common flat copy, found without configuration."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DataError
from .samples import RAFDB_CLASSES, SampleSet

log = logging.getLogger("train.data")

LABEL_FILE = "list_patition_label.txt"
SPLITS = ("train", "test")


def _layouts(base: Path) -> list[tuple[Path, list[Path]]]:
    """(label file, candidate image folders) for every supported layout under `base`."""
    return [
        (base / "basic" / "EmoLabel" / LABEL_FILE, [base / "basic" / "Image" / "aligned"]),
        (base / "EmoLabel" / LABEL_FILE, [base / "Image" / "aligned"]),
        (base / LABEL_FILE, [base / "aligned" / "aligned", base / "aligned"]),
    ]


def find_rafdb(root: Path) -> tuple[Path, Path]:
    """(label file, image folder) of a RAF-DB copy under root, root/rafdb or root/RAF-DB."""
    root = Path(root)
    looked: list[str] = []
    for base in (root, root / "rafdb", root / "RAF-DB"):
        for label_file, image_dirs in _layouts(base):
            if not label_file.is_file():
                looked.append(str(label_file))
                continue
            for d in image_dirs:
                if d.is_dir():
                    return label_file, d
            looked_dirs = ", ".join(str(d) for d in image_dirs)
            raise DataError(f"{label_file}: RAF-DB image folder not found; looked for: {looked_dirs}")
    raise DataError(f"RAF-DB label file {LABEL_FILE} not found; looked for: {', '.join(looked)}")


def check_jpeg(path: Path) -> str | None:
    """None when `path` looks like a complete JPEG, else the problem. Cheap: start and end markers and
    PIL's header parse (no pixel decode); decode errors later name the file too."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(3)
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 1024))
            tail = fh.read()
        if head != b"\xff\xd8\xff":
            return "not a JPEG (bad header)"
        if b"\xff\xd9" not in tail:
            return "truncated JPEG (no end-of-image marker)"
        with Image.open(path) as im:
            im.verify()
    except OSError as e:
        return f"unreadable JPEG ({e})"
    except Exception as e:  # PIL raises assorted errors on corrupt headers
        return f"unreadable JPEG ({type(e).__name__}: {e})"
    return None


def _image_path(image_dir: Path, name: str) -> Path | None:
    stem = Path(name).stem
    for candidate in (image_dir / f"{stem}_aligned.jpg", image_dir / name):
        if candidate.is_file():
            return candidate
    return None


def read_rafdb(
    label_file: Path, image_dir: Path, *, skip_bad: bool = False, verify: bool = True
) -> dict[str, SampleSet]:
    """RAF-DB splits "train" and "test" (image files, labels 0..6 in RAF-DB order)."""
    label_file, image_dir = Path(label_file), Path(image_dir)
    try:
        lines = label_file.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"{label_file}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise DataError(f"{label_file}: not a text file") from None
    kept: dict[str, tuple[list[Path], list[int]]] = {s: ([], []) for s in SPLITS}
    skipped = dict.fromkeys(SPLITS, 0)
    first_bad: str | None = None
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        parts = text.split()
        split = parts[0].split("_")[0] if parts else ""
        problem = None
        if len(parts) != 2:
            problem = f"expected '<name> <label>', got {text.strip()!r}"
        elif split not in SPLITS:
            problem = f"image name {parts[0]!r} does not start with train_ or test_"
        elif not parts[1].lstrip("-").isdigit():
            problem = f"label {parts[1]!r} is not an integer"
        elif not 1 <= int(parts[1]) <= len(RAFDB_CLASSES):
            problem = f"label {parts[1]} out of range 1..{len(RAFDB_CLASSES)}"
        path = None
        if problem is None:
            path = _image_path(image_dir, parts[0])
            if path is None:
                problem = f"image {Path(parts[0]).stem}_aligned.jpg missing from {image_dir}"
            elif verify and (reason := check_jpeg(path)) is not None:
                problem = f"image {path}: {reason}"
        if problem is not None:
            message = f"{label_file} line {number}: {problem}"
            if not skip_bad:
                raise DataError(message)
            first_bad = first_bad or message
            skipped[split if split in skipped else "train"] += 1
            continue
        kept[split][0].append(path)
        kept[split][1].append(int(parts[1]) - 1)
    if first_bad:
        log.warning(f"{label_file}: skipped {sum(skipped.values())} malformed sample(s) (first: {first_bad})")
    return {
        s: SampleSet("files", None, kept[s][0], np.asarray(kept[s][1], np.int64), RAFDB_CLASSES, skipped[s], label_file)
        for s in SPLITS
    }
