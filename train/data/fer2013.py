"""Readers for the FER2013 CSV and the FERPlus relabelling (`fer2013new.csv`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError
from .samples import FER2013_CLASSES, FERPLUS_CLASSES, FERPLUS_COLUMNS, SampleSet
from .textlines import csv_records, is_integer, is_natural, shown

log = logging.getLogger("train.data")

FER_SIZE = 48
FER_PIXELS = FER_SIZE * FER_SIZE
# FER2013 `Usage` value -> split name.
USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
_DIGITS = b"0123456789 "


@dataclass
class _Row:
    line: int
    usage: str | None
    image: np.ndarray | None
    emotion: int | None
    problem: str | None


def find_fer2013_csv(root: Path) -> Path:
    """The FER2013 CSV: `root` itself, or fer2013.csv under root, root/fer2013 or root/fer2013/fer2013."""
    root = Path(root)
    if root.is_file():
        return root
    looked = [
        root / "fer2013.csv",
        root / "fer2013" / "fer2013.csv",
        root / "fer2013" / "fer2013" / "fer2013.csv",
    ]
    for p in looked:
        if p.is_file():
            return p
    raise DataError(f"FER2013 CSV not found; looked for: {', '.join(str(p) for p in looked)}")


def find_ferplus_csv(root: Path) -> Path:
    """The FERPlus label file fer2013new.csv under root, root/ferplus, root/FERPlus or root/fer2013."""
    root = Path(root)
    if root.is_file():
        return root
    names = ("", "ferplus", "FERPlus", "fer2013")
    looked = [root / n / "fer2013new.csv" if n else root / "fer2013new.csv" for n in names]
    for p in looked:
        if p.is_file():
            return p
    raise DataError(f"FERPlus label file not found; looked for: {', '.join(str(p) for p in looked)}")


def _parse_pixels(text: str) -> tuple[np.ndarray | None, str | None]:
    """48x48 uint8 image from FER2013's space-separated pixel values, or (None, problem)."""
    raw = text.strip().encode()
    if raw.translate(None, _DIGITS):
        for token in text.strip().split(" "):
            if token and not is_natural(token):
                if any(c.isspace() for c in token):
                    sep = next(c for c in token if c.isspace())
                    return None, f"pixels separated by {sep!r}; FER2013 pixels are separated by spaces"
                return None, f"non-integer pixel {shown(token, 20)}"
        return None, f"non-integer pixels {shown(text.strip(), 20)}"
    tokens = raw.split()
    if len(tokens) != FER_PIXELS:
        return None, f"pixels has {len(tokens)} values, expected {FER_PIXELS} (48x48)"
    too_big = next((t for t in tokens if len(t) > 3 and int(t) > 255), None)
    values = np.fromstring(raw, dtype=np.int64, sep=" ") if too_big is None else None
    if values is None or values.max() > 255:
        big = int(too_big) if too_big is not None else int(values.max())
        return None, f"pixel value {big if big < 10**9 else '>1e9'} out of range 0..255"
    return values.astype(np.uint8).reshape(FER_SIZE, FER_SIZE), None


def _check_emotion(text: str) -> tuple[int | None, str | None]:
    text = text.strip()
    if not is_integer(text):
        return None, f"emotion {shown(text, 20)} is not an integer"
    if not 0 <= int(text) < len(FER2013_CLASSES):
        return None, f"label {text} out of range 0..{len(FER2013_CLASSES) - 1}"
    return int(text), None


def _read_fer_rows(path: Path, check_emotion: bool) -> list[_Row]:
    """Every data row of the CSV, in order; bad rows carry `problem` instead of data."""
    required = (("emotion",) if check_emotion else ()) + ("pixels", "Usage")
    rows: list[_Row] = []
    for line, rec, problem in csv_records(path, required):
        if rec is None:
            rows.append(_Row(line, None, None, None, problem))
            continue
        usage = rec["Usage"].strip()
        if usage not in USAGE_TO_SPLIT:
            problem = f"unknown Usage {shown(usage, 20)} (expected Training, PublicTest or PrivateTest)"
            usage = None
        emotion = None
        if problem is None and check_emotion:
            emotion, problem = _check_emotion(rec["emotion"])
        image = None
        if problem is None:
            image, problem = _parse_pixels(rec["pixels"])
        rows.append(_Row(line, usage, image, emotion, problem))
    return rows


def _report(path: Path, bad: list[tuple[int, str]], skip_bad: bool) -> None:
    if not bad:
        return
    line, problem = bad[0]
    if not skip_bad:
        raise DataError(f"{path} line {line}: {problem}")
    log.warning(f"{path}: skipped {len(bad)} malformed row(s) (first: line {line}: {problem})")


def read_fer2013(path: Path, *, skip_bad: bool = False) -> dict[str, SampleSet]:
    """FER2013 splits: train = Training, val = PublicTest, test = PrivateTest (gray 48x48 arrays)."""
    path = Path(path)
    rows = _read_fer_rows(path, check_emotion=True)
    bad = [(r.line, r.problem) for r in rows if r.problem]
    _report(path, bad, skip_bad)
    out: dict[str, SampleSet] = {}
    for usage, split in USAGE_TO_SPLIT.items():
        good = [r for r in rows if r.problem is None and r.usage == usage]
        skipped = sum(1 for r in rows if r.problem and (r.usage == usage or (r.usage is None and split == "train")))
        out[split] = _array_set(good, [r.emotion for r in good], FER2013_CLASSES, skipped, path)
    return out


def _array_set(rows: list[_Row], labels: list, classes: tuple[str, ...], skipped: int, source: Path) -> SampleSet:
    images = np.stack([r.image for r in rows]) if rows else np.zeros((0, FER_SIZE, FER_SIZE), np.uint8)
    return SampleSet("array", images, None, np.asarray(labels, np.int64), classes, skipped, source)


def ferplus_label(votes: np.ndarray) -> int | None:
    """Majority vote over all 10 FERPlus columns; None when the winner is unknown/NF or nobody voted.

    Ties go to the first column in file order (neutral, happiness, ..., contempt, unknown, NF), so a tie
    between an emotion and unknown/NF keeps the emotion (its majority is not unknown/NF).
    """
    if votes.sum() <= 0:
        return None
    winner = int(np.argmax(votes))  # argmax returns the first maximum
    return winner if winner < len(FERPLUS_CLASSES) else None


def read_ferplus(fer_csv: Path, ferplus_csv: Path, *, skip_bad: bool = False) -> dict[str, SampleSet]:
    """FERPlus splits: FER2013 pixels with the majority-vote labels of `fer2013new.csv` (8 classes).

    Rows of fer2013new.csv match fer2013.csv row by row. Rows with an empty `Image name`, no votes or an
    unknown/NF majority are dropped (not counted as skipped); malformed rows raise or are skipped.
    """
    fer_csv, ferplus_csv = Path(fer_csv), Path(ferplus_csv)
    fer_rows = _read_fer_rows(fer_csv, check_emotion=False)
    bad: list[tuple[Path, int, str]] = [(fer_csv, r.line, r.problem) for r in fer_rows if r.problem]
    kept: dict[str, tuple[list[_Row], list[int]]] = {u: ([], []) for u in USAGE_TO_SPLIT}
    skipped = dict.fromkeys(USAGE_TO_SPLIT, 0)
    dropped = 0
    n_new = 0
    for i, (line, rec, problem) in enumerate(csv_records(ferplus_csv, ("Usage", "Image name") + FERPLUS_COLUMNS)):
        n_new += 1
        if i >= len(fer_rows):
            continue
        fer = fer_rows[i]
        usage = "" if rec is None else rec["Usage"].strip()
        if problem is None and usage not in USAGE_TO_SPLIT:
            problem = f"unknown Usage {shown(usage, 20)} (expected Training, PublicTest or PrivateTest)"
        elif problem is None and fer.usage is not None and usage != fer.usage:
            problem = f"Usage {usage!r} differs from {fer_csv.name} line {fer.line} ({fer.usage!r})"
        texts = [] if rec is None else [rec[c].strip() for c in FERPLUS_COLUMNS]
        if problem is None:
            nonint = [t for t in texts if not is_natural(t)]
            if nonint:
                problem = f"vote count {shown(nonint[0], 20)} is not a non-negative integer"
            elif max(len(t) for t in texts) > 9:
                problem = f"vote count {max(texts, key=len)[:20]} is implausibly large"
        if problem is not None:
            bad.append((ferplus_csv, line, problem))
        if problem is not None or fer.problem is not None:
            skipped[usage if usage in skipped else (fer.usage or "Training")] += 1
            continue
        label = ferplus_label(np.array([int(t) for t in texts], dtype=np.int64))
        if not rec["Image name"].strip() or label is None:
            dropped += 1
            continue
        kept[usage][0].append(fer)
        kept[usage][1].append(label)
    if n_new != len(fer_rows):
        raise DataError(
            f"{ferplus_csv}: {n_new} data rows but {fer_csv.name} has {len(fer_rows)}; they must match row by row"
        )
    if bad:
        src, line, problem = min(bad, key=lambda b: (b[0] != fer_csv, b[1]))
        if not skip_bad:
            raise DataError(f"{src} line {line}: {problem}")
        n_bad = sum(skipped.values())
        log.warning(f"{ferplus_csv}: skipped {n_bad} malformed row(s) (first: {src.name} line {line}: {problem})")
    if dropped:
        log.info(f"{ferplus_csv}: dropped {dropped} image(s) without a face or with an unknown/NF majority")
    return {
        split: _array_set(kept[u][0], kept[u][1], FERPLUS_CLASSES, skipped[u], ferplus_csv)
        for u, split in USAGE_TO_SPLIT.items()
    }
