"""AffectNet's training.csv / validation.csv (about 1M rows of ~1 kB, mostly the landmark column), read
in seconds: a vectorised path for the rows in the release's plain form, the exact per-row parser for
every other row, so a malformed row is still named by file and line.

A row takes the fast path when it has exactly the header's number of commas, no quote, no byte >= 128,
a path without spaces or backslashes, face box and expression fields of 1-9 ASCII digits, an
expression in 0..10, a non-empty box and an image that exists. Any other row (with a quoted field,
"134.0", " 1", a negative value, a missing image, ...) goes through `parse_row`, which gives the answer
or the problem. Per-row Python work left on the fast path: slicing the path and one set lookup.
"""

from __future__ import annotations

import codecs
import csv
from collections import Counter
from dataclasses import dataclass, field
from itertools import compress
from pathlib import Path

import numpy as np

from .errors import DataError
from .labels import AFFECTNET_NON_EMOTIONS

CSV_COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "expression")
BOX_COLUMNS = ("face_x", "face_y", "face_width", "face_height")
CHUNK = 1 << 24
"""Bytes read at a time (whole lines): bounds the reader's memory, whatever the file's size."""
MAX_DIGITS = 9
_POW10 = 10 ** np.arange(MAX_DIGITS, dtype=np.int32)


def parse_row(row: list[str], col: dict[str, int], num_classes: int) -> tuple[str, int | None, list[int]]:
    """(relative path, label or None when dropped, box) of one row's fields; ValueError text is the problem."""
    rel = row[col["subDirectory_filePath"]].strip().replace("\\", "/")
    text = row[col["expression"]].strip()
    if not text.lstrip("-").isdigit():
        raise ValueError(f"expression {text!r} is not an integer")
    expression = int(text)
    if not 0 <= expression <= max(AFFECTNET_NON_EMOTIONS):
        raise ValueError(f"expression {expression} out of range 0..{max(AFFECTNET_NON_EMOTIONS)}")
    try:
        box = [int(float(row[col[c]])) for c in BOX_COLUMNS]
    except ValueError:
        raise ValueError("face box face_x/face_y/face_width/face_height is not numeric") from None
    if box[0] < 0 or box[1] < 0 or box[2] <= 0 or box[3] <= 0:
        raise ValueError(f"face box {box} is empty or negative")
    return rel, (expression if expression < num_classes else None), box


def split_fields(text: str) -> list[str]:
    """The comma-separated fields of one line; quoted lines through the csv module."""
    return text.split(",") if '"' not in text else next(csv.reader([text]))


@dataclass
class Rows:
    """What the reader collected, in file order: relative paths, labels, boxes, problems, dropped counts."""

    rels: list[str] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)


class _Reader:
    def __init__(self, path: Path, images: Path, num_classes: int, existing: set[str]) -> None:
        self.path, self.images, self.num_classes, self.existing = path, images, num_classes, existing
        self.header: list[str] | None = None
        self.col: dict[str, int] = {}
        self.out = Rows()

    # ---- the exact path, one line at a time -------------------------------------------------
    def slow_line(self, number: int, raw: bytes) -> tuple[str, int, list[int]] | None:
        """(rel, label, box) of a kept row; None for a blank, dropped or bad row (recorded)."""
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
            self.out.bad.append(f"{self.path} line {number}: not UTF-8 text (byte 0x{raw[e.start]:02x})")
            return None
        if number == 1:
            text = text.removeprefix("\ufeff")
        if not text:
            return None
        row = split_fields(text)
        if self.header is None:
            self.set_header(number, row)
            return None
        try:
            if len(row) != len(self.header):
                raise ValueError(f"{len(row)} fields, the header has {len(self.header)}")
            rel, label, box = parse_row(row, self.col, self.num_classes)
            if rel not in self.existing:
                raise ValueError(f"image {self.images / rel} missing")
        except ValueError as e:
            self.out.bad.append(f"{self.path} line {number}: {e}")
            return None
        if label is None:
            self.out.dropped[int(row[self.col["expression"]])] += 1
            return None
        return rel, label, box

    def set_header(self, number: int, row: list[str]) -> None:
        header = [h.strip() for h in row]
        missing = [c for c in CSV_COLUMNS if c not in header]
        if missing:
            raise DataError(f"{self.path} line {number}: header lacks column(s) {', '.join(missing)}")
        self.header, self.col = header, {c: header.index(c) for c in CSV_COLUMNS}

    # ---- the vectorised path, one chunk of whole lines at a time ------------------------------
    @staticmethod
    def _digits(a: np.ndarray, start: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(value, ok) of fields a[start:stop] that are 1..MAX_DIGITS ASCII digits (read right-aligned:
        column j of the gathered W columns is the digit of 10^(W-1-j) in every row)."""
        width = stop - start
        ok = (width >= 1) & (width <= MAX_DIGITS)
        cols = int(width[ok].max()) if ok.any() else 1
        j = np.arange(cols - 1, -1, -1, dtype=np.int32)  # places, most significant first
        d = a[np.maximum(stop.astype(np.int32)[:, None] - 1 - j, 0)] - np.uint8(48)  # non-digits wrap above 9
        inside = j < width[:, None]
        ok &= np.all((d <= 9) | ~inside, axis=1)
        return (np.where(inside, d, 0) * _POW10[j]).sum(axis=1, dtype=np.int64), ok

    def chunk(self, data: bytes, size: int, first_line: int) -> int:
        """Every line of data[:size] (whole lines, each ending in \\n; the first is line `first_line`);
        returns the number of lines. (Not sliced: a 16 MB copy per chunk.)"""
        a = np.frombuffer(data, np.uint8, count=size)
        marks = np.flatnonzero(a <= 44)  # one pass finds "\n", "," and '"' (digits, ".", ";" and letters are above)
        kind = a[marks]
        ends, commas = marks[kind == 10], marks[kind == 44]
        starts = np.concatenate(([0], ends[:-1] + 1))
        stops = ends - (a[np.maximum(ends - 1, 0)] == 13)  # a line's text ends before "\r\n" or "\n"
        n_fields = len(self.header)
        first = np.searchsorted(commas, starts)
        plain = (np.searchsorted(commas, stops) - first == n_fields - 1) & (stops > starts)
        quotes = marks[kind == 34]
        plain &= np.searchsorted(quotes, stops) == np.searchsorted(quotes, starts)
        if not data.isascii():  # lines with a non-ASCII byte: exact path
            high = np.flatnonzero(a >= 128)
            plain &= np.searchsorted(high, stops) == np.searchsorted(high, starts)
        rows = np.flatnonzero(plain)
        c = commas[first[rows, None] + np.arange(n_fields - 1)]  # row x comma
        begin = np.concatenate((starts[rows, None], c + 1), axis=1)  # row x field
        end = np.concatenate((c, stops[rows, None]), axis=1)
        values, ok = {}, np.ones(rows.size, bool)
        for name in (*BOX_COLUMNS, "expression"):
            k = self.col[name]
            values[name], good = self._digits(a, begin[:, k], end[:, k])
            ok &= good
        ok &= (values["expression"] <= max(AFFECTNET_NON_EMOTIONS)) & (values["face_width"] > 0)
        ok &= values["face_height"] > 0
        k = self.col["subDirectory_filePath"]
        p0, p1 = begin[:, k], end[:, k]
        ok &= (p1 > p0) & (a[p0] > 32) & (a[np.maximum(p1 - 1, 0)] > 32)  # nothing for strip() to remove
        text = data.decode("ascii", errors="replace")  # one character per byte: byte offsets are str offsets
        rels = list(map(text.__getitem__, map(slice, p0.tolist(), p1.tolist())))
        ok &= np.fromiter(map(self.existing.__contains__, rels), bool, count=len(rels))
        if data.find(b"\\") >= 0:  # a backslash becomes "/" on the exact path
            ok &= np.fromiter(("\\" not in r for r in rels), bool, count=len(rels))
        slow = np.ones(starts.size, bool)
        slow[rows[ok]] = False
        lines = [data[i : j + 1] for i, j in zip(starts[slow].tolist(), ends[slow].tolist())]
        exact = [
            (int(i), got)
            for i, raw in zip(np.flatnonzero(slow).tolist(), lines)
            if (got := self.slow_line(first_line + i, raw))
        ]
        rels = list(compress(rels, ok.tolist())) if not ok.all() else rels
        self._emit(rows[ok], rels, {k: v[ok] for k, v in values.items()}, exact)
        return int(starts.size)

    def _emit(self, lines: np.ndarray, rels: list[str], values: dict[str, np.ndarray], exact: list) -> None:
        """Append a chunk's kept rows in line order: the fast rows (`lines`, `rels`, `values`) and those the
        exact parser kept (`exact`: (line index, (rel, label, box)))."""
        expression = values["expression"]
        box = np.stack([values[c] for c in BOX_COLUMNS], axis=1)
        keep = expression < self.num_classes
        for e, n in zip(*np.unique(expression[~keep], return_counts=True)):
            self.out.dropped[int(e)] += int(n)
        kept = list(compress(rels, keep.tolist()))
        if not exact:
            self.out.rels.extend(kept)
            self.out.labels.append(expression[keep])
            self.out.boxes.append(box[keep])
            return
        # rows the exact parser kept (rare: "134.0", quoted fields, ...), merged back in line order
        order = np.argsort(np.concatenate((lines[keep], np.asarray([i for i, _ in exact], np.int64))), kind="stable")
        all_rels = kept + [g[0] for _, g in exact]
        all_labels = np.concatenate((expression[keep], np.asarray([g[1] for _, g in exact], np.int64)))
        all_boxes = np.concatenate((box[keep], np.asarray([g[2] for _, g in exact], np.int64).reshape(-1, 4)))
        self.out.rels.extend(all_rels[i] for i in order.tolist())
        self.out.labels.append(all_labels[order])
        self.out.boxes.append(all_boxes[order])


def read_rows(path: Path, images: Path, num_classes: int, existing: set[str]) -> Rows:
    """Every row of one official AffectNet CSV: kept rows, problems (file and line) and dropped counts."""
    reader = _Reader(path, images, num_classes, existing)
    try:
        fh = open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror})") from None
    line = 1
    with fh:
        while reader.header is None:  # the first non-blank line
            raw = fh.readline()
            if not raw:
                raise DataError(f"{path} line 1: header lacks column(s) {', '.join(CSV_COLUMNS)}")
            if line == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            reader.slow_line(line, raw)
            if reader.out.bad:  # a header that is not UTF-8
                raise DataError(reader.out.bad[0])
            line += 1
        tail = b""
        while True:
            block = fh.read(CHUNK)
            data = tail + block
            if not block:
                if data and not data.endswith(b"\n"):
                    data += b"\n"
                cut = len(data)
            else:
                cut = data.rfind(b"\n") + 1
            if cut:
                line += reader.chunk(data, cut, line)
            tail = data[cut:]
            if not block:
                break
    return reader.out
