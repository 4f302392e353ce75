"""Reader for RAF-DB (basic): the official layout and the common flat copy, found without configuration."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DataError
from .imagecheck import check_images, file_problem
from .samples import RAFDB_CLASSES, SampleSet
from .textlines import is_integer, read_lines, shown

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


def jpeg_header_problem(path: Path) -> str | None:
    """Cheap first look (start and end markers, PIL's header parse): None when `path` looks like a JPEG."""
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


def check_jpeg(path: Path) -> str | None:
    """None when `path` is a complete JPEG that decodes cleanly, else the problem (header check, then a
    strict full decode: damaged entropy-coded data is found here, not mid-epoch in the loader)."""
    return jpeg_header_problem(path) or file_problem(path)


def _image_path(image_dir: Path, name: str) -> Path | None:
    stem = Path(name).stem
    for candidate in (image_dir / f"{stem}_aligned.jpg", image_dir / name):
        try:
            if candidate.is_file():
                return candidate
        except (OSError, ValueError):  # a name too long for the file system, or with a NUL byte
            return None
    return None


@dataclass
class _Entry:
    line: int
    split: str
    name: str = ""
    label: int = -1
    path: Path | None = None
    problem: str | None = None


def _parse_line(number: int, text: str | None, problem: str | None, image_dir: Path) -> _Entry | None:
    """One label-file line as an entry (None for a blank line); a bad line carries `problem`."""
    if text is None:
        return _Entry(number, "train", problem=problem)
    parts = text.split()
    if not parts:
        return None
    split = parts[0].split("_")[0]
    entry = _Entry(number, split if split in SPLITS else "train", name=parts[0])
    if len(parts) != 2:
        entry.problem = f"expected '<name> <label>', got {shown(text.strip())}"
    elif split not in SPLITS:
        entry.problem = f"image name {shown(parts[0])} does not start with train_ or test_"
    elif not is_integer(parts[1]):
        entry.problem = f"label {shown(parts[1], 20)} is not an integer"
    elif not 1 <= int(parts[1]) <= len(RAFDB_CLASSES):
        entry.problem = f"label {parts[1]} out of range 1..{len(RAFDB_CLASSES)}"
    else:
        entry.label = int(parts[1]) - 1
        entry.path = _image_path(image_dir, parts[0])
        if entry.path is None:
            entry.problem = f"image {Path(parts[0]).stem}_aligned.jpg missing from {image_dir}"
    return entry


def _drop_duplicates(label_file: Path, entries: list[_Entry], skip_bad: bool) -> list[_Entry]:
    """Repeated images: an identical repeat is dropped with a warning; a repeat with another label is an
    error naming both lines (with skip_bad, every line of that image becomes bad)."""
    first: dict[Path, _Entry] = {}
    repeats: list[tuple[_Entry, _Entry]] = []
    for e in entries:
        if e.problem is not None or e.path is None:
            continue
        seen = first.setdefault(e.path, e)
        if seen is e:
            continue
        if seen.label == e.label:
            e.problem = "duplicate"
            repeats.append((seen, e))
            continue
        conflict = (
            f"{e.name} labelled {e.label + 1} here but {seen.label + 1} on line {seen.line} (conflicting duplicate)"
        )
        if not skip_bad:
            raise DataError(f"{label_file} line {e.line}: {conflict}")
        e.problem = conflict
        if seen.problem is None:
            seen.problem = f"{seen.name} labelled {seen.label + 1} here but {e.label + 1} on line {e.line}"
    if repeats:
        seen, e = repeats[0]
        log.warning(
            f"{label_file}: ignored {len(repeats)} duplicate line(s) (first: line {e.line} repeats line {seen.line},"
            f" {e.name} {e.label + 1})"
        )
    return [e for e in entries if e.problem != "duplicate"]


def _verify_images(entries: list[_Entry]) -> None:
    """check_jpeg on every image, cached (train.data.imagecheck); problems land on the entries."""
    todo = [e for e in entries if e.problem is None and e.path is not None]
    problems = check_images([e.path for e in todo], check=check_jpeg)
    for e in todo:
        if e.path in problems:
            e.problem = f"image {e.path}: {problems[e.path]}"


def read_rafdb(
    label_file: Path, image_dir: Path, *, skip_bad: bool = False, verify: bool = True
) -> dict[str, SampleSet]:
    """RAF-DB splits "train" and "test" (image files, labels 0..6 in RAF-DB order).

    verify: decode every image once (cached, see train.data.imagecheck) so a corrupt file is reported
    (or skipped) here, not mid-epoch.
    """
    label_file, image_dir = Path(label_file), Path(image_dir)
    entries = [e for n, t, p in read_lines(label_file) if (e := _parse_line(n, t, p, image_dir)) is not None]
    first_bad = next((e for e in entries if e.problem is not None), None)
    if first_bad is not None and not skip_bad:
        raise DataError(f"{label_file} line {first_bad.line}: {first_bad.problem}")
    entries = _drop_duplicates(label_file, entries, skip_bad)
    if verify:
        _verify_images(entries)
    bad = [e for e in entries if e.problem is not None]
    if bad and not skip_bad:
        raise DataError(f"{label_file} line {bad[0].line}: {bad[0].problem}")
    if bad:
        log.warning(
            f"{label_file}: skipped {len(bad)} malformed sample(s) (first: line {bad[0].line}: {bad[0].problem})"
        )
    out: dict[str, SampleSet] = {}
    for s in SPLITS:
        good = [e for e in entries if e.split == s and e.problem is None]
        n_bad = sum(1 for e in bad if e.split == s)
        labels = np.asarray([e.label for e in good], np.int64)
        out[s] = SampleSet("files", None, [e.path for e in good], labels, RAFDB_CLASSES, n_bad, label_file)
    return out
