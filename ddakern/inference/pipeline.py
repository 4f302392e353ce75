"""`predict`'s work: images in batches, videos frame by frame (every k-th, smoothed), webcams live.

Each processed image or frame goes to the annotated output and the attention overlays when asked,
then to the ResultWriter: its rows come last, so an image with rows has its other outputs too. An
unreadable file is one line on stderr and the run goes on. `Options.stop` (set on SIGINT / SIGTERM)
ends the run at the next image batch or video frame; what was read is still classified and written.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ddakern.atomic import new_temp, publish
from ddakern.inference.annotate import annotate, write_image
from ddakern.inference.images import ImageError, read_image
from ddakern.inference.outputs import OutputError, annotated_suffix, output_stems
from ddakern.inference.predictor import ImageResult, Predictor
from ddakern.inference.results import ResultWriter
from ddakern.inference.run_state import VideoDone
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
    stop: threading.Event = field(default_factory=threading.Event)
    stems: dict[str, str] = field(default_factory=dict)  # input name -> output stem (outputs.output_stems)
    resume: dict[str, VideoDone] = field(default_factory=dict)  # video / webcam name -> frames already done


@dataclass
class Totals:
    """What a run processed; the seconds are wall time of the whole loop (decode, detect, classify)."""

    images: int = 0
    frames: int = 0
    faces: int = 0
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def say(line: str) -> None:
    tqdm.write(line, file=sys.stderr)


def annotated_path(opts: Options, source: Source, suffix: str | None = None) -> Path:
    """OUT/annotated/<the source's unique stem><suffix> (the image's own suffix when OpenCV writes it)."""
    stem = opts.stems.get(source.name) or output_stems([(source.name, source.path)])[source.name]
    return opts.out / "annotated" / f"{stem}{suffix or annotated_suffix(source.path)}"


def _emit(pred: Predictor, writer: ResultWriter, opts: Options, name: str, frame: int | None, rgb, res) -> None:
    if opts.on_result is not None and res.faces:
        opts.on_result(name, frame, rgb, res)
    writer.add(name, frame, res)


def run_images(pred: Predictor, sources: list[Source], writer: ResultWriter, opts: Options, totals: Totals) -> None:
    """Decode, detect and classify images in chunks of the predictor's batch size (until `opts.stop`)."""
    bar = tqdm(total=len(sources), unit="img", disable=not opts.progress, file=sys.stderr)
    for start in range(0, len(sources), pred.batch_size):
        if opts.stop.is_set():
            break
        chunk, rgbs = [], []
        for s in sources[start : start + pred.batch_size]:
            try:
                rgbs.append(read_image(s.path))
                chunk.append(s)
            except ImageError as e:
                totals.skipped.append(str(e))
                say(f"skipped: {e}")
        for s, rgb, res in zip(chunk, rgbs, pred.predict_many(rgbs)):
            if res.note:
                say(f"{s.name}: {res.note}")
            if opts.annotate:
                write_image(annotated_path(opts, s), annotate(rgb, res, pred.class_names))
            _emit(pred, writer, opts, s.name, None, rgb, res)
            totals.images += 1
            totals.faces += len(res.faces)
        bar.update(len(sources[start : start + pred.batch_size]))
    bar.close()


class VideoOut:
    """An annotated video written to a temporary file; close() renames it into place (a stopped run's
    video ends at the last frame written), discard() removes it: it is never left hidden."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        import cv2

        try:
            self.path, self.tmp = path, new_temp(path, suffix=path.suffix)  # the suffix picks the container
        except OSError as e:
            raise OutputError(path, e) from None
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        self.frames = 0
        if not self.writer.isOpened():
            self.discard()
            raise OutputError(path, "OpenCV cannot write an mp4v video here")

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        self.writer.release()
        try:
            if self.frames and self.tmp.stat().st_size == 0:
                raise OutputError(self.path, "OpenCV wrote an empty video (disk full?)")
            publish(self.tmp, self.path)
        except OSError as e:
            self.tmp.unlink(missing_ok=True)
            raise e if isinstance(e, OutputError) else OutputError(self.path, e) from None

    def discard(self) -> None:
        self.writer.release()
        self.tmp.unlink(missing_ok=True)


def frames(
    capture, every: int, max_frames: int | None, start: int = 0, grab_until: int = -1
) -> Iterator[tuple[int, np.ndarray | None, bool]]:
    """(index, RGB frame, processed?) for every frame of an open cv2.VideoCapture, numbered from
    `start`; frames up to `grab_until` are only grabbed (not decoded to RGB: None), to skip them fast."""
    import cv2

    i = start
    while max_frames is None or i < max_frames:
        if i <= grab_until:
            if not capture.grab():
                return
            yield i, None, i % every == 0
        else:
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
    """Classify the buffered processed frames together, then emit every buffered frame in order."""
    todo = [rgb for _, rgb, p in buffer if p]
    results = iter(pred.predict_many(todo)) if todo else iter(())
    for i, rgb, processed in buffer:
        if processed:
            res = next(results)
            if st.smoother is not None:
                st.smoother(res.faces)
            st.last = res
            _emit(pred, writer, opts, name, i, rgb, res)
            st.processed, st.faces = st.processed + 1, st.faces + len(res.faces)
        if st.out is not None:
            st.out.write(annotate(rgb, st.last, pred.class_names))
    buffer.clear()


def open_capture(target: str | int):
    import cv2

    capture = cv2.VideoCapture(target)
    return capture if capture.isOpened() else None


def _replay(st: VideoState, done: VideoDone, i: int, rgb, processed: bool, names: tuple[str, ...]) -> None:
    """A frame an earlier run finished: its recorded result sets the smoothing state and is drawn."""
    if processed and i in done.results:
        st.last = done.results[i]
        if st.smoother is not None:
            st.smoother.prime(st.last.faces)
    if st.out is not None and rgb is not None:
        st.out.write(annotate(rgb, st.last, names))


def run_video(pred: Predictor, source: Source, writer: ResultWriter, opts: Options, totals: Totals) -> bool:
    """Every `opts.every`-th frame of a video file through the predictor; fps reported on stderr.

    Frames an earlier run finished (`opts.resume`) are not classified again: their recorded rows set
    the smoothing state and, with --annotate, are drawn again, so the annotated video is whole and the
    rows match an uninterrupted run. Returns True when the video was read to its end (or
    --max-frames), False when `opts.stop` ended it (its annotated video is then finalised up to there).
    """
    import cv2

    capture = open_capture(str(source.path))
    if capture is None:
        totals.skipped.append(f"{source.name}: OpenCV cannot open this video")
        say(f"skipped: {totals.skipped[-1]}")
        return True
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    n = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    done = opts.resume.get(source.name, VideoDone())
    bar = tqdm(total=n, unit="frame", desc=source.path.name, disable=not opts.progress, file=sys.stderr)
    out = st = None
    try:
        out = VideoOut(annotated_path(opts, source, ".mp4"), fps, size) if opts.annotate else None
        st, buffer, started, read, stopped = VideoState(opts, out), [], time.perf_counter(), 0, False
        for item in frames(capture, opts.every, opts.max_frames, grab_until=-1 if out else done.last):
            if opts.stop.is_set():
                stopped = True
                break
            i, rgb, processed = item
            if i <= done.last:
                _replay(st, done, i, rgb, processed, pred.class_names)
            else:
                buffer.append(item)
                totals.frames += 1
                read += 1
                if sum(p for _, _, p in buffer) >= pred.batch_size or len(buffer) >= 256:
                    _flush(pred, writer, opts, source.name, buffer, st)
            bar.update(1)
        _flush(pred, writer, opts, source.name, buffer, st)
    except BaseException as e:
        if out is not None:  # interrupted: the video up to here; failed: removed (--resume draws it again)
            _finish(out, keep=isinstance(e, KeyboardInterrupt))
        raise
    finally:
        bar.close()
        capture.release()
        if st is not None:
            totals.faces += st.faces
    if out is not None:
        if stopped and read == 0:
            out.discard()  # stopped before anything new: the earlier run's video stays
        else:
            out.close()
    secs = time.perf_counter() - started
    resumed = f" (resumed after frame {done.last})" if done.last >= 0 else ""
    say(
        f"{source.name}: {st.processed} of {read} frames processed (every {opts.every}){resumed}, {st.faces} faces, "
        f"{st.processed / max(secs, 1e-9):.1f} processed frames/s, {read / max(secs, 1e-9):.1f} frames/s read"
    )
    return not stopped


def _finish(out: VideoOut, keep: bool) -> None:
    try:
        out.close() if keep else out.discard()
    except OSError:
        out.discard()


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
    start = opts.resume[source.name].last + 1 if source.name in opts.resume else 0  # --resume: new frame numbers
    limit = None if opts.max_frames is None else start + opts.max_frames
    try:
        for i, rgb, processed in frames(capture, opts.every, limit, start=start):
            if opts.stop.is_set():
                break
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
