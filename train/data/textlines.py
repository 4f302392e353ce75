"""Line-by-line reading of the data sets' text files (CSV and label lists).

UTF-8 with or without a byte-order mark. A line that is not valid UTF-8 becomes a problem of that line
(so `--skip-bad` can skip it and the message names the line) instead of failing the whole file.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterator
from pathlib import Path

from .errors import DataError

_INTEGER = re.compile(r"-?[0-9]+")
_NATURAL = re.compile(r"[0-9]+")


def is_integer(text: str) -> bool:
    """True for an optionally negative run of ASCII digits ('²', '--1', '1.0', '٣' are not)."""
    return _INTEGER.fullmatch(text) is not None


def is_natural(text: str) -> bool:
    """True for a run of ASCII digits (0, 1, 2, ...)."""
    return _NATURAL.fullmatch(text) is not None


def shown(text: str, limit: int = 40) -> str:
    """repr() of `text`, shortened to about `limit` characters (messages stay one readable line)."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def read_lines(path: Path) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, text, problem) per line of `path`, line ends removed, a leading UTF-8 BOM dropped.

    text is None (and problem says why) for a line that is not UTF-8. DataError when `path` cannot be read.
    """
    try:
        fh = open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror or e})") from None
    number = 0
    try:
        with fh:
            for number, raw in enumerate(fh, start=1):
                if number == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8) :]
                raw = raw.rstrip(b"\r\n")
                try:
                    yield number, raw.decode("utf-8"), None
                except UnicodeDecodeError as e:
                    yield number, None, f"not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
    except OSError as e:
        raise DataError(f"{path} line {number + 1}: cannot read ({e.strerror or e})") from None


def split_csv_line(text: str) -> tuple[list[str] | None, str | None]:
    """(fields, problem) of one comma-separated line; quoted fields are parsed by the csv module."""
    if '"' not in text:
        return text.split(","), None
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error as e:
        return None, f"malformed CSV ({e})"
    return (rows[0] if rows else [""]), None


def csv_records(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str] | None, str | None]]:
    """(line, record, problem) per non-blank data line of the CSV at `path`; the header must name `required`.

    record maps the (stripped) header names to the fields; it is None when the line is not UTF-8, not valid
    CSV or has a different number of fields than the header (problem says which).
    """
    lines = read_lines(path)
    header: list[str] | None = None
    for number, text, problem in lines:
        if text is not None and not text.strip():
            continue
        fields, problem = (None, problem) if text is None else split_csv_line(text)
        if fields is None:
            raise DataError(f"{path} line {number}: cannot read the header: {problem}")
        header = [h.strip() for h in fields]
        missing = [c for c in required if c not in header]
        if missing:
            found = ", ".join(shown(h, 20) for h in header[:12])
            raise DataError(f"{path} line {number}: header lacks column(s) {', '.join(missing)} (found: {found})")
        break
    if header is None:
        raise DataError(f"{path}: empty file; expected a header line naming {', '.join(required)}")
    for number, text, problem in lines:
        if text is not None and not text.strip():
            continue
        fields, problem = (None, problem) if text is None else split_csv_line(text)
        if fields is not None and len(fields) != len(header):
            fields, problem = None, f"{len(fields)} comma-separated field(s), the header has {len(header)}"
        yield number, (None if fields is None else dict(zip(header, fields))), problem
