"""`predict`'s work: images in batches, videos frame by frame (every k-th, smoothed), webcams live.

Each processed image or frame goes to the ResultWriter and, when asked, to the annotated output and
the attention overlays. An unreadable file is one line on stderr and the run goes on. Images and
video frames are decoded and their faces detected in worker threads ahead of the classifier, whose
batches take faces from many images / frames (`ddakern.inference.prefetch`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ddakern.atomic import new_temp, publish
from ddakern.inference.annotate import annotate, write_image
from ddakern.inference.predictor import ImageResult, Predictor, Prepared
from ddakern.inference.prefetch import StreamStats, background
from ddakern.inference.results import ResultWriter
from ddakern.inference.smoothing import Smoother
from ddakern.inference.sources import Source

FaceHook = Callable[[str, "int | None", np.ndarray, ImageResult], None]
"""Called with (name, frame, rgb, result) for every processed image or frame (attention overlays)."""


@dataclass
class Options:
    out: Path
    annotate: bool = False
    every: int = 1
    smooth: float = 0.0
    progress: bool = True
    max_frames: int | None = None
    on_result: FaceHook | None = None


@dataclass
class Totals:
    """What a run processed; the seconds are wall time of the whole loop (decode, detect, classify)."""

    images: int = 0
    frames: int = 0
    faces: int = 0
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stream: StreamStats = field(default_factory=StreamStats)  # where the classifying thread spent its time


def say(line: str) -> None:
    tqdm.write(line, file=sys.stderr)


def output_name(source: Source, taken: set[str], suffix: str | None = None) -> str:
    """A unique file name for a source's annotated output (stem, then stem-2, stem-3 ...)."""
    path = source.path or Path(source.name.replace(":", "-"))
    stem, ext = path.stem, suffix or path.suffix.lower() or ".png"
    name, n = f"{stem}{ext}", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}{ext}"
    taken.add(name)
    return name


def _emit(pred: Predictor, writer: ResultWriter, opts: Options, name: str, frame: int | None, rgb, res) -> None:
    writer.add(name, frame, res)
    if opts.on_result is not None and res.faces:
        opts.on_result(name, frame, rgb, res)


def run_images(pred: Predictor, sources: list[Source], writer: ResultWriter, opts: Options, totals: Totals) -> None:
    """Decode and detect images in worker threads, classify their faces in shared batches, in order."""
    taken: set[str] = set()
    keep = opts.annotate or opts.on_result is not None
    bar = tqdm(total=len(sources), unit="img", disable=not opts.progress, file=sys.stderr)

    def prepare(s: Source) -> Prepared:
        return pred.prepare(s.path, keep_rgb=keep, item=s)

    for p, res in pred.predict_stream(sources, prepare=prepare, stats=totals.stream):
        s = p.item
        if p.error is not None:
            totals.skipped.append(str(p.error))
            say(f"skipped: {p.error}")
        else:
            totals.images += 1
            totals.faces += len(res.faces)
            if res.note:
                say(f"{s.name}: {res.note}")
            _emit(pred, writer, opts, s.name, None, p.rgb, res)
            if opts.annotate:
                write_image(opts.out / "annotated" / output_name(s, taken), annotate(p.rgb, res, pred.class_names))
        bar.update(1)
    bar.close()


class VideoOut:
    """An annotated video written to a temporary file and renamed into place on close()."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        import cv2

        self.path, self.tmp = path, new_temp(path, suffix=path.suffix)  # the suffix picks the container
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self.writer.release()
        publish(self.tmp, self.path)


def frames(capture, every: int, max_frames: int | None) -> Iterator[tuple[int, np.ndarray, bool]]:
    """(index, RGB frame, processed?) for every frame of an open cv2.VideoCapture."""
    import cv2

    i = 0
    while max_frames is None or i < max_frames:
        ok, bgr = capture.read()
        if not ok:
            return
        yield i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), i % every == 0
        i += 1


class VideoState:
    """Per-video state: smoothing, the latest result (drawn on frames that are not processed), output."""

    def __init__(self, opts: Options, out: VideoOut | None) -> None:
        self.smoother = Smoother(opts.smooth) if opts.smooth > 0 else None
        self.last = ImageResult([], 0, 0)
        self.out = out
        self.processed = 0
        self.faces = 0


def _flush(pred: Predictor, writer: ResultWriter, opts: Options, name: str, buffer: list, st: VideoState) -> None:
    """Predict the buffered processed frames, then emit every buffered frame in order (webcams)."""
    results = iter([pred.predict(rgb) for _, rgb, p in buffer if p])  # live: no batching delay
    for i, rgb, processed in buffer:
        if processed:
            res = next(results)
            if st.smoother is not None:
                st.smoother(res.faces)
            st.last, st.processed, st.faces = res, st.processed + 1, st.faces + len(res.faces)
            _emit(pred, writer, opts, name, i, rgb, res)
        if st.out is not None:
            st.out.write(annotate(rgb, st.last, pred.class_names))
    buffer.clear()


def open_capture(target: str | int):
    import cv2

    capture = cv2.VideoCapture(target)
    return capture if capture.isOpened() else None


def run_video(pred: Predictor, source: Source, writer: ResultWriter, opts: Options, totals: Totals) -> None:
    """Every `opts.every`-th frame of a video file through the predictor; fps reported on stderr."""
    import cv2

    capture = open_capture(str(source.path))
    if capture is None:
        totals.skipped.append(f"{source.name}: OpenCV cannot open this video")
        say(f"skipped: {totals.skipped[-1]}")
        return
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    n = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    out = VideoOut(opts.out / "annotated" / output_name(source, set(), ".mp4"), fps, size) if opts.annotate else None
    st, started, read = VideoState(opts, out), time.perf_counter(), 0
    keep = opts.annotate or opts.on_result is not None
    bar = tqdm(total=n, unit="frame", desc=source.path.name, disable=not opts.progress, file=sys.stderr)

    def prepare(item: tuple[int, np.ndarray, bool]) -> Prepared:
        i, rgb, processed = item
        if not processed:
            return Prepared(i, rgb if opts.annotate else None, rgb.shape[1], rgb.shape[0], [], skip=True)
        return pred.prepare(rgb, keep_rgb=keep, item=i)

    decoded = background(frames(capture, opts.every, opts.max_frames), depth=2 * pred.workers + 2)
    try:
        for p, res in pred.predict_stream(decoded, prepare=prepare, stats=totals.stream):
            totals.frames += 1
            read += 1
            if res is not None:
                if st.smoother is not None:
                    st.smoother(res.faces)
                st.last, st.processed, st.faces = res, st.processed + 1, st.faces + len(res.faces)
                _emit(pred, writer, opts, source.name, p.item, p.rgb, res)
            if st.out is not None:
                st.out.write(annotate(p.rgb, st.last, pred.class_names))
            bar.update(1)
    finally:
        decoded.close()
    bar.close()
    capture.release()
    if out is not None:
        out.close()
    secs = time.perf_counter() - started
    totals.faces += st.faces
    say(
        f"{source.name}: {st.processed} of {read} frames processed (every {opts.every}), {st.faces} faces, "
        f"{st.processed / max(secs, 1e-9):.1f} processed frames/s, {read / max(secs, 1e-9):.1f} frames/s read"
    )


def display_available() -> bool:
    """Whether a live window can be shown: a display is set and this OpenCV build has a GUI."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform in ("win32", "darwin")):
        return False
    import cv2

    try:
        cv2.namedWindow("ddakern predict")
        return True
    except cv2.error:
        return False


def run_webcam(pred: Predictor, source: Source, writer: ResultWriter, opts: Options, totals: Totals) -> None:
    """Frames of a webcam until q / Esc (window) or Ctrl-C / --max-frames; live window when possible."""
    import cv2

    capture = open_capture(source.webcam)
    if capture is None:
        totals.skipped.append(f"{source.name}: no camera with index {source.webcam} could be opened")
        say(f"skipped: {totals.skipped[-1]}")
        return
    live = display_available()
    if not live:
        say(
            f"{source.name}: no display (or OpenCV without GUI), so no live window; "
            "writing predictions only (Ctrl-C stops)"
        )
    st, started = VideoState(opts, None), time.perf_counter()
    try:
        for i, rgb, processed in frames(capture, opts.every, opts.max_frames):
            totals.frames += 1
            if processed:
                _flush(pred, writer, opts, source.name, [(i, rgb, True)], st)
            if live:
                cv2.imshow("ddakern predict", cv2.cvtColor(annotate(rgb, st.last, pred.class_names), cv2.COLOR_RGB2BGR))
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    break
    except KeyboardInterrupt:
        pass
    finally:
        capture.release()
        if live:
            cv2.destroyAllWindows()
    totals.faces += st.faces
    say(
        f"{source.name}: {st.processed} frames processed, "
        f"{st.processed / max(time.perf_counter() - started, 1e-9):.1f} frames/s"
    )
