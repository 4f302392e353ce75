"""`python -m ddakern predict CHECKPOINT INPUT... [--out DIR]`: emotions of the faces in images, folders,
videos and webcams, as predictions.csv + predictions.jsonl (and annotated images / videos, attention overlays).

CHECKPOINT is a train.run / train.fuse checkpoint (.pt) or a file from `python -m ddakern export`
(.onnx, run on ONNX Runtime). Rows are written as they are made: an interrupted or failed run keeps
every finished row and `--resume` continues it. Exit codes: 0 done (unreadable inputs are reported and
skipped), 1 the run failed (missing package, bad checkpoint, detector, a write error: rows kept),
2 bad command line or results already in --out, 130 / 143 stopped by SIGINT / SIGTERM (rows kept).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ddakern.cli import prog
from ddakern.extras import MissingExtra, for_predict, require
from ddakern.inference.checkpoint import CheckpointError
from ddakern.inference.detect import DETECTORS, DetectorError, parse_min_face
from ddakern.inference.outputs import OutputError, output_stems
from ddakern.inference.results import ResultsExist, ResultWriter
from ddakern.inference.run_state import (
    STATE_FILE,
    Kept,
    RunState,
    check_out,
    check_resumable,
    lock,
    options_of,
    remove_stale,
    repair,
)
from ddakern.inference.signals import StopOnSignal
from ddakern.inference.sources import Source, collect


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog(__name__, "python -m ddakern predict"), description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path, help="train.run / train.fuse checkpoint, or an exported .onnx")
    p.add_argument("inputs", nargs="+", help="image files, folders (recursive), video files, webcam index")
    p.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (default: predictions)")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    p.add_argument("--resume", action="store_true", help="continue the interrupted or failed run in --out")
    p.add_argument("--detector", default="haar", choices=DETECTORS, help="haar (default), yunet, none (pre-cropped)")
    p.add_argument("--yunet-model", type=Path, help="YuNet ONNX file for --detector yunet")
    p.add_argument("--margin", type=float, default=0.15, help="margin around each face, fraction of its size")
    p.add_argument(
        "--min-face",
        help="smallest face searched: pixels (e.g. 40) or a fraction of the short side (e.g. 0.05); "
        "default 0.1 of the short side, at most 160 px. Smaller is slower (detection time ~ 1 / min-face^2)",
    )
    p.add_argument(
        "--workers", type=int, help="threads decoding and detecting ahead of the classifier (default: cores, <= 4)"
    )
    p.add_argument("--batch-size", type=int, default=32, help="faces per classifier batch")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--backend", default="torch", choices=("torch", "torch.compile", "onnxruntime"))
    p.add_argument("--annotate", action="store_true", help="write annotated images / videos to OUT/annotated")
    p.add_argument("--attention", action="store_true", help="write DDA attention (or Grad-CAM) panels to OUT/attention")
    p.add_argument(
        "--attention-map", default="focus", choices=("focus", "entropy", "gain"), help="how a DDA mask is summarised"
    )
    p.add_argument("--every", type=int, default=1, help="video: process every k-th frame")
    p.add_argument("--smooth", type=float, default=0.0, help="video: weight of the past in an EMA of probabilities")
    p.add_argument("--max-frames", type=int, help="video / webcam: stop after this many frames")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug-wait-after-rows", type=int, help=argparse.SUPPRESS)  # tests: wait for a signal
    return p


def attention_hook(pred, args: argparse.Namespace, stems: dict[str, str]):
    """The per-result callback that writes attention panels (needs the PyTorch model)."""
    from ddakern.inference.overlay import AttentionWriter

    model = getattr(pred.backend, "model", None)
    if model is None:
        raise CheckpointError("--attention needs the PyTorch checkpoint, not an exported .onnx")
    return AttentionWriter(model, pred, args.out / "attention", summary=args.attention_map, stems=stems)


def validate(args: argparse.Namespace) -> None:
    """Bad option values and combinations (ValueError, one line), then the packages the run needs."""
    if args.every < 1 or args.batch_size < 1 or not 0 <= args.smooth < 1 or args.margin < 0:
        raise ValueError("--every and --batch-size must be >= 1, --smooth in [0, 1), --margin >= 0")
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it: pass one")
    if args.workers is not None and args.workers < 1:
        raise ValueError("--workers must be >= 1")
    if args.min_face is not None and args.detector == "none":
        raise ValueError("--min-face needs a detector (haar or yunet), not --detector none")
    if args.min_face is not None:
        parse_min_face(args.min_face)
    onnx = args.backend == "onnxruntime" or args.checkpoint.suffix == ".onnx"
    require(for_predict(args.attention, onnx), "predict --attention" if args.attention else "predict")


def build(args: argparse.Namespace, stems: dict[str, str]):
    from ddakern.inference.pipeline import Options
    from ddakern.inference.predictor import Predictor

    min_face = None if args.min_face is None else parse_min_face(args.min_face)
    pred = Predictor.from_checkpoint(
        args.checkpoint,
        device=args.device,
        backend=args.backend,
        detector=args.detector,
        yunet_model=args.yunet_model,
        margin=args.margin,
        batch_size=args.batch_size,
        keep_crops=args.attention,
        min_face=min_face,
        workers=args.workers,
    )
    opts = Options(args.out, args.annotate, args.every, args.smooth, not args.no_progress, args.max_frames)
    opts.stems = stems
    if args.attention:
        opts.on_result = attention_hook(pred, args, stems)
    return pred, opts


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def summary(totals, files: list[Path]) -> str:
    s = max(totals.seconds, 1e-9)
    counts = f"{_count(totals.images, 'image')}, {_count(totals.frames, 'video frame')}, {_count(totals.faces, 'face')}"
    done = f"{counts} in {totals.seconds:.1f} s"
    rate = f"{totals.images / s:.1f} images/s, {totals.faces / s:.1f} faces/s"
    bad = f"; {_count(len(totals.skipped), 'input')} skipped" if totals.skipped else ""
    return f"{done} ({rate}){bad}; results: {', '.join(map(str, files))}"


def debug_wait(after: int, stop) -> Callable[[int], None]:
    """--debug-wait-after-rows N: once N rows are written, print `debug-wait N` and wait (up to 120 s)
    for a signal, so a test can stop the run at a known point."""
    waited = False

    def hook(rows: int) -> None:
        nonlocal waited
        if rows >= after and not waited:
            waited = True
            print(f"debug-wait {after}", flush=True)
            deadline = time.monotonic() + 120
            while not stop.is_set() and time.monotonic() < deadline:
                time.sleep(0.01)

    return hook


def prepare(args: argparse.Namespace, sources: list[Source]):
    """Lock --out, decide new run or resume, load the model, clean stale temporaries, repair kept rows.
    Returns (predictor, options, run state, kept rows, resuming?)."""
    from ddakern.inference.pipeline import say

    options = options_of(args)
    state = check_out(args.out, args.resume, args.overwrite)
    if state is not None:
        check_resumable(state, options)
    elif args.resume:
        say(f"nothing to resume in {args.out}: starting a new run")
    pred, opts = build(args, output_stems([(s.name, s.path) for s in sources]))
    stale = remove_stale(args.out)
    if stale:
        say(f"removed {len(stale)} temporary files left in {args.out} by a killed run (e.g. {stale[0].name})")
    kept, videos_done = Kept(), []
    if state is not None:
        videos_done = list(state.get("videos_done", []))
        kept = repair(args.out, pred.class_names, set(videos_done))
        opts.resume = {name: done for name, done in kept.videos.items() if name not in videos_done}
        say(
            f"resuming {args.out}: {kept.rows} rows kept ({len(kept.images)} images, "
            f"{len(videos_done)} videos finished, {len(opts.resume)} to continue); done inputs are skipped"
        )
    run = RunState(args.out, options, videos_done)
    run.save(rows=kept.rows)
    return pred, opts, run, kept, state is not None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        validate(args)
    except MissingExtra as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sources, problems = collect(args.inputs)
    sources = list(dict.fromkeys(sources))  # a file named twice (or in a folder also named) runs once
    created = not args.out.exists()
    try:
        held = lock(args.out)
    except (OutputError, ResultsExist) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1 if isinstance(e, OutputError) else 2
    try:
        try:
            pred, opts, run, kept, resuming = prepare(args, sources)
        except (ResultsExist, ValueError, OutputError, KeyboardInterrupt) as e:
            if created:
                _remove_empty(args.out)
            if isinstance(e, KeyboardInterrupt):
                print("interrupted before any prediction: nothing written", file=sys.stderr)
                return 130
            print(f"error: {e}", file=sys.stderr)
            return 1 if isinstance(e, (CheckpointError, DetectorError, OutputError)) else 2
        return _run(args, sources, problems, pred, opts, run, kept, resuming)
    finally:
        if held is not None:
            os.close(held)  # releases the lock


def _run(args, sources: list[Source], problems: list[str], pred, opts, run: RunState, kept: Kept, resume: bool) -> int:
    """The prediction loop under the signal handlers; the rows kept and the exit code whatever happens."""
    from ddakern.inference.pipeline import Totals, run_images, run_video, run_webcam, say

    totals = Totals(skipped=list(problems))
    for line in problems:
        say(f"skipped: {line}")
    error, writer, started = None, None, time.perf_counter()
    with StopOnSignal() as stop:
        opts.stop = stop.event
        try:
            writer = ResultWriter(args.out, pred.class_names, resume=resume)
            if args.debug_wait_after_rows:
                writer.on_commit = debug_wait(args.debug_wait_after_rows, stop.event)
            images = [s for s in sources if s.kind == "image" and s.name not in kept.images]
            run_images(pred, images, writer, opts, totals)
            for s in sources:
                if stop.event.is_set():
                    break
                if s.kind == "video" and s.name not in run.data["videos_done"]:
                    if run_video(pred, s, writer, opts, totals):
                        run.video_done(s.name)
                elif s.kind == "webcam":
                    run_webcam(pred, s, writer, opts, totals)
        except KeyboardInterrupt:  # a second signal (or Ctrl-C where no handler could be installed)
            stop.signum = stop.signum or 2
        except OutputError as e:
            error = e
        except BaseException:
            _close(writer, run, kept, "failed")
            say(f"failed: {_kept(kept, writer)}; continue with --resume once fixed")
            raise
        status = "failed" if error else "interrupted" if stop.signum else "done"
        error = _close(writer, run, kept, status) or error
    totals.seconds = time.perf_counter() - started
    print(summary(totals, writer.paths if writer is not None else []))
    if error is not None:
        print(f"error: {error}; {_kept(kept, writer)}; continue with --resume once fixed", file=sys.stderr)
        return 1
    if stop.signum:
        print(f"interrupted by {stop.name}: {_kept(kept, writer)}; continue with --resume", file=sys.stderr)
        return stop.exit_code
    return 0


def _kept(kept: Kept, writer: ResultWriter | None) -> str:
    if writer is None:
        return "no rows written"
    return f"kept {kept.rows + writer.rows} rows in {' and '.join(map(str, writer.paths))}"


def _close(writer: ResultWriter | None, run: RunState, kept: Kept, status: str) -> OutputError | None:
    """fsync and close the result files, record the run's status; the first write error, if any."""
    error = None
    if writer is not None:
        try:
            writer.close()
        except OutputError as e:
            error, status = e, "failed"
    try:
        run.save(status=status, rows=kept.rows + (writer.rows if writer is not None else 0))
    except OutputError as e:
        error = error or e
    return error


def _remove_empty(out: Path) -> None:
    """Remove the --out folder this run created (and found nothing to put in)."""
    try:
        (out / STATE_FILE).unlink(missing_ok=True)
        out.rmdir()
    except OSError:
        pass
