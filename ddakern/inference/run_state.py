"""A `predict` run's state in its output folder, so an interrupted or failed run can be resumed.

OUT/predict_state.json holds the status ("running", "interrupted", "failed", "done"), the options
that decide the results (checkpoint, inputs, detector, --every, ...) and the videos finished. What is
done comes from the rows themselves: an image is done when it has rows, a video up to the last frame
with rows (`repair` reads them back). The folder is locked (flock) while a run writes to it, so a
second run cannot interleave rows or take the first run's temporary files for stale ones.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddakern.atomic import open_temp, publish, write_text
from ddakern.inference.outputs import OutputError, stale_temps
from ddakern.inference.predictor import FaceRecord, ImageResult
from ddakern.inference.results import RESULT_FILES, ResultsExist, csv_cells, csv_header, csv_text

STATE_FILE = "predict_state.json"
RESUME_OPTIONS = (
    "checkpoint", "inputs", "detector", "yunet_model", "margin", "every", "smooth", "max_frames",
    "annotate", "attention", "attention_map",
)  # fmt: skip
"""The options a resumed run must share with the interrupted one (they change the rows or outputs)."""


class ResumeError(ValueError):
    """--resume cannot continue the run in OUT; one line."""


@dataclass
class VideoDone:
    """What an unfinished video already has: its last processed frame and each processed frame's result."""

    last: int = -1
    results: dict[int, ImageResult] = field(default_factory=dict)


@dataclass
class Kept:
    """The rows an earlier run left, read back by `repair`."""

    rows: int = 0
    faces: int = 0
    images: set[str] = field(default_factory=set)
    videos: dict[str, VideoDone] = field(default_factory=dict)


def options_of(args: Any) -> dict[str, Any]:
    """The RESUME_OPTIONS of parsed arguments, as JSON values."""
    out = {}
    for key in RESUME_OPTIONS:
        v = getattr(args, key)
        out[key] = str(v) if isinstance(v, Path) else list(v) if isinstance(v, (list, tuple)) else v
    return out


def read_state(out: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((out / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


class RunState:
    """OUT/predict_state.json, rewritten atomically at each change."""

    def __init__(self, out: Path, options: dict[str, Any], videos_done: list[str] | None = None) -> None:
        self.path = out / STATE_FILE
        self.data: dict[str, Any] = {"format": 1, "status": "running", "options": options,
                                     "videos_done": list(videos_done or []), "rows": 0}  # fmt: skip

    def save(self, **changes: Any) -> None:
        self.data.update(changes)
        try:
            write_text(self.path, json.dumps(self.data, indent=1) + "\n")
        except OSError as e:
            raise OutputError(self.path, e) from None

    def video_done(self, name: str) -> None:
        self.save(videos_done=[*self.data["videos_done"], name])


def lock(out: Path) -> int | None:
    """Create OUT and hold an exclusive flock on it (released when the fd closes or the process ends);
    None where flock does not exist (Windows) or the filesystem refuses it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(out, e) from None
    try:
        import fcntl

        fd = os.open(out, os.O_RDONLY)
    except (ImportError, OSError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ResultsExist(f"{out} is in use by another predict run; wait for it or choose another --out") from None
    except OSError:  # e.g. a network filesystem without flock: run unlocked
        os.close(fd)
        return None
    return fd


def check_out(out: Path, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """The state to resume (None: start a new run); ResultsExist when OUT holds results that neither
    --resume nor --overwrite was given for."""
    state = read_state(out)
    have = [out / f for f in RESULT_FILES if (out / f).exists()]
    if overwrite:
        return None
    if resume:
        if state is None and have:
            raise ResultsExist(f"{have[0]} has no {STATE_FILE} to resume; pass --overwrite or choose another --out")
        return state
    if state is not None and state.get("status") != "done":
        raise ResultsExist(
            f"{out} holds an unfinished run ({state.get('status')}, {state.get('rows', 0)} rows kept); "
            "pass --resume to continue it, --overwrite to start again, or choose another --out"
        )
    if have:
        raise ResultsExist(f"{have[0]} exists; pass --overwrite or choose another --out")
    return None


def check_resumable(state: dict[str, Any], options: dict[str, Any]) -> None:
    old = state.get("options", {})
    differ = [k for k in RESUME_OPTIONS if old.get(k) != options[k]]
    if differ:
        names = ", ".join(f"--{k.replace('_', '-')}" for k in differ)
        raise ResumeError(f"--resume needs the options of the interrupted run; these differ: {names}")


def remove_stale(out: Path) -> list[Path]:
    """Delete the temporary files a killed run left in OUT (see outputs.stale_temps); returns them."""
    found = stale_temps(out, (*RESULT_FILES, STATE_FILE))
    for p in found:
        p.unlink(missing_ok=True)
    return found


def _face(rec: dict) -> FaceRecord:
    box = tuple(rec["box"])
    return FaceRecord(box, rec["score"], box, rec["probabilities"], rec["label"])  # type: ignore[arg-type]


def repair(out: Path, class_names: tuple[str, ...], finished: set[str]) -> Kept:
    """Read back the rows of predictions.jsonl (the record of truth), drop a partial last line, and
    rewrite predictions.csv from them, so both hold the same complete rows; what is done is returned
    (frame results only for the videos not `finished`)."""
    jsonl, kept, good = out / RESULT_FILES[1], Kept(), 0
    if not jsonl.exists():  # the run failed before its first row
        return kept
    fh, tmp = open_temp(out / RESULT_FILES[0], encoding="utf-8", newline="")
    try:
        with fh, open(jsonl, "rb") as src:
            fh.write(csv_text([csv_header(class_names)]))
            for n, line in enumerate(src, 1):
                if not line.endswith(b"\n"):
                    break  # cut by a kill during the write: that image / frame is not done
                try:
                    rec = json.loads(line)
                    probs = rec["probabilities"]
                    cells = csv_cells(rec, class_names)
                except (ValueError, KeyError, TypeError):
                    raise ResumeError(f"{jsonl}: line {n} is not a prediction record; cannot resume") from None
                if probs is not None and list(probs) != list(class_names):
                    raise ResumeError(f"{jsonl} holds other classes than the checkpoint's; cannot resume")
                fh.write(csv_text([cells]))
                good += len(line)
                _keep(kept, rec, finished)
        with open(jsonl, "r+b") as f:
            f.truncate(good)
        publish(tmp, out / RESULT_FILES[0])
    except OSError as e:
        raise OutputError(e.filename or out, e) from None
    finally:
        tmp.unlink(missing_ok=True)
    return kept


def _keep(kept: Kept, rec: dict, finished: set[str]) -> None:
    kept.rows += 1
    kept.faces += rec["box"] is not None
    name, frame = rec["file"], rec["frame"]
    if frame is None:
        kept.images.add(name)
        return
    done = kept.videos.setdefault(name, VideoDone())
    done.last = max(done.last, frame)
    if name in finished:
        return
    res = done.results.setdefault(frame, ImageResult([], 0, 0))
    if rec["box"] is None:
        res.note = rec["note"]
    else:
        res.faces.append(_face(rec))
