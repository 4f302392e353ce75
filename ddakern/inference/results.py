"""predictions.csv and predictions.jsonl, one row per face (or per face-less image/frame), written
to temporary files and renamed into place when the run finishes: a crash leaves earlier results alone."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from ddakern.atomic import open_temp, publish
from ddakern.inference.predictor import FaceRecord, ImageResult

RESULT_FILES = ("predictions.csv", "predictions.jsonl")


class ResultsExist(FileExistsError):
    """The output folder already holds results and overwriting was not asked for."""


def check_free(out: Path, overwrite: bool) -> None:
    """Refuse to replace earlier results in `out` unless `overwrite`."""
    taken = [out / f for f in RESULT_FILES if (out / f).exists()]
    if taken and not overwrite:
        raise ResultsExist(f"{taken[0]} exists; pass --overwrite or choose another --out")


class ResultWriter:
    """Appends rows as results come; `close()` renames both files into place (`abort()` drops them)."""

    def __init__(self, out: Path, class_names: tuple[str, ...]) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out, self.class_names = out, class_names
        self.csv_file, self.csv_tmp = open_temp(out / RESULT_FILES[0], encoding="utf-8", newline="")
        self.jsonl_file, self.jsonl_tmp = open_temp(out / RESULT_FILES[1], encoding="utf-8", newline="")
        self.csv = csv.writer(self.csv_file)
        probs = [f"p_{n}" for n in class_names]
        self.csv.writerow(["file", "frame", "face", "x0", "y0", "x1", "y1", "score", "label", *probs, "note"])
        self.rows = 0

    def add(self, file: str, frame: int | None, result: ImageResult) -> None:
        """The faces of one image (frame None) or video frame; an image without faces gets one row with its note."""
        faces: list[FaceRecord | None] = list(result.faces) or [None]
        for i, face in enumerate(faces):
            self._row(file, frame, i if face else None, face, result.note)

    def _row(self, file: str, frame: int | None, index: int | None, face: FaceRecord | None, note: str | None) -> None:
        rec: dict[str, Any] = {"file": file, "frame": frame, "face": index}
        if face is None:
            rec.update(box=None, score=None, label=None, probabilities=None, note=note)
            cells = [""] * (6 + len(self.class_names))
        else:
            rec.update(box=list(face.box), score=face.score, label=face.label, probabilities=face.probabilities)
            rec["note"] = None
            p = [f"{face.probabilities[n]:.6f}" for n in self.class_names]
            cells = [*face.box, f"{face.score:.6g}", face.label, *p]
        self.csv.writerow([file, "" if frame is None else frame, "" if index is None else index, *cells, note or ""])
        self.jsonl_file.write(json.dumps(rec) + "\n")
        self.rows += 1

    def close(self) -> list[Path]:
        """Flush, fsync and rename both files into place; returns their paths."""
        done = []
        for fh, tmp, name in (
            (self.csv_file, self.csv_tmp, RESULT_FILES[0]),
            (self.jsonl_file, self.jsonl_tmp, RESULT_FILES[1]),
        ):
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            publish(tmp, self.out / name)
            done.append(self.out / name)
        return done

    def abort(self) -> None:
        for fh, tmp in ((self.csv_file, self.csv_tmp), (self.jsonl_file, self.jsonl_tmp)):
            fh.close()
            tmp.unlink(missing_ok=True)
