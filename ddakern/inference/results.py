"""predictions.csv and predictions.jsonl, one row per face (or per face-less image/frame).

Rows go straight into the final files, appended and flushed to the operating system per image or
video frame, so an interrupted or failed run keeps every row it finished, in place and readable. The
rows of one image or frame are written whole: a write that fails part-way (disk full) or is cut by a
signal is truncated away in both files, so the two always hold the same complete images and frames.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ddakern.inference.outputs import OutputError
from ddakern.inference.predictor import FaceRecord, ImageResult

RESULT_FILES = ("predictions.csv", "predictions.jsonl")


class ResultsExist(FileExistsError):
    """The output folder already holds results and overwriting (or resuming) was not asked for."""


def csv_header(class_names: tuple[str, ...]) -> list[str]:
    return ["file", "frame", "face", "x0", "y0", "x1", "y1", "score", "label", *(f"p_{n}" for n in class_names), "note"]


def record(file: str, frame: int | None, index: int | None, face: FaceRecord | None, note: str | None) -> dict:
    """One JSONL record (the CSV row is made from it, so both files always agree)."""
    rec: dict[str, Any] = {"file": file, "frame": frame, "face": index}
    if face is None:
        rec.update(box=None, score=None, label=None, probabilities=None, note=note)
    else:
        rec.update(box=list(face.box), score=face.score, label=face.label, probabilities=face.probabilities)
        rec["note"] = None
    return rec


def csv_cells(rec: dict, class_names: tuple[str, ...]) -> list[Any]:
    """The CSV row of a JSONL record."""
    frame, index = rec["frame"], rec["face"]
    if rec["box"] is None:
        cells: list[Any] = [""] * (6 + len(class_names))
    else:
        p = [f"{rec['probabilities'][n]:.6f}" for n in class_names]
        cells = [*rec["box"], f"{rec['score']:.6g}", rec["label"], *p]
    return [rec["file"], "" if frame is None else frame, "" if index is None else index, *cells, rec["note"] or ""]


def csv_text(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue()


def _write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a regular file may take a write in parts)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class ResultWriter:
    """Appends the rows of each image or frame to both files as it comes (see the module docstring).

    `resume=True` appends to files that `run_state.repair` has made consistent; otherwise both are
    created (replacing any). An empty CSV gets its header first. `on_commit(rows)` is called after each commit.
    """

    def __init__(self, out: Path, class_names: tuple[str, ...], resume: bool = False) -> None:
        self.out, self.class_names = out, class_names
        self.paths = [out / name for name in RESULT_FILES]
        self.fds: list[int] = []
        self.rows = self.faces = self.items = 0  # written by this run
        self.on_commit: Callable[[int], None] | None = None
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (0 if resume else os.O_TRUNC)
        for path in self.paths:
            try:
                self.fds.append(os.open(path, flags, 0o666))
            except OSError as e:
                self.close()
                raise OutputError(path, e) from None
        self.sizes = [os.fstat(fd).st_size for fd in self.fds]
        if self.sizes[0] == 0:
            self._commit([csv_text([csv_header(class_names)]).encode(), b""])

    def add(self, file: str, frame: int | None, result: ImageResult) -> None:
        """The faces of one image (frame None) or video frame; an image without faces gets one row with its note."""
        faces: list[FaceRecord | None] = list(result.faces) or [None]
        recs = [record(file, frame, i if face else None, face, result.note) for i, face in enumerate(faces)]
        text = csv_text([csv_cells(r, self.class_names) for r in recs])
        lines = "".join(json.dumps(r) + "\n" for r in recs)
        self._commit([text.encode("utf-8"), lines.encode("utf-8")], len(recs), len(result.faces))
        if self.on_commit is not None:
            self.on_commit(self.rows)

    def _commit(self, data: list[bytes], rows: int = 0, faces: int = 0) -> None:
        """Append data[i] to file i; on any failure or interrupt, truncate both back and re-raise."""
        try:
            for fd, chunk, path in zip(self.fds, data, self.paths):
                try:
                    _write_all(fd, chunk)
                except OSError as e:
                    raise OutputError(path, e) from None
        except BaseException:
            self._rollback()
            raise
        self.sizes = [s + len(chunk) for s, chunk in zip(self.sizes, data)]
        if rows:
            self.rows, self.faces, self.items = self.rows + rows, self.faces + faces, self.items + 1

    def _rollback(self) -> None:
        for fd, size in zip(self.fds, self.sizes):
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass  # the rows before stay; a partial last line is dropped by `repair` on --resume

    def close(self) -> list[Path]:
        """fsync and close both files (rows already written stay whatever happens); returns their paths."""
        error = None
        for fd, path in zip(self.fds, self.paths):
            try:
                os.fsync(fd)
            except OSError as e:
                error = error or OutputError(path, e)
            finally:
                os.close(fd)
        self.fds = []
        if error is not None:
            raise error
        return self.paths
