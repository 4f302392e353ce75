"""`python -m ddakern predict CHECKPOINT INPUT... [--out DIR]`: emotions of the faces in images, folders,
videos and webcams, as predictions.csv + predictions.jsonl (and annotated images / videos, attention overlays).

CHECKPOINT is a train.run / train.fuse checkpoint (.pt) or a file from `python -m ddakern export`
(.onnx, run on ONNX Runtime). Exit codes: 0 done (unreadable inputs are reported and skipped), 1 the
run failed (bad checkpoint, detector), 2 bad command line or results already in --out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ddakern.inference.checkpoint import CheckpointError
from ddakern.inference.detect import DETECTORS, DetectorError, parse_min_face
from ddakern.inference.pipeline import Options, Totals, run_images, run_video, run_webcam, say
from ddakern.inference.predictor import Predictor
from ddakern.inference.results import ResultsExist, ResultWriter, check_free
from ddakern.inference.sources import collect


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ddakern predict", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path, help="train.run / train.fuse checkpoint, or an exported .onnx")
    p.add_argument("inputs", nargs="+", help="image files, folders (recursive), video files, webcam index")
    p.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (default: predictions)")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --out")
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
    return p


def attention_hook(pred: Predictor, args: argparse.Namespace):
    """The per-result callback that writes attention panels (needs the PyTorch model)."""
    from ddakern.inference.overlay import AttentionWriter

    model = getattr(pred.backend, "model", None)
    if model is None:
        raise CheckpointError("--attention needs the PyTorch checkpoint, not an exported .onnx")
    return AttentionWriter(model, pred, args.out / "attention", summary=args.attention_map)


def build(args: argparse.Namespace) -> tuple[Predictor, Options]:
    if args.every < 1 or args.batch_size < 1 or not 0 <= args.smooth < 1 or args.margin < 0:
        raise ValueError("--every and --batch-size must be >= 1, --smooth in [0, 1), --margin >= 0")
    if args.workers is not None and args.workers < 1:
        raise ValueError("--workers must be >= 1")
    if args.min_face is not None and args.detector == "none":
        raise ValueError("--min-face needs a detector (haar or yunet), not --detector none")
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
    if args.attention:
        opts.on_result = attention_hook(pred, args)
    return pred, opts


def summary(totals: Totals, files: list[Path]) -> str:
    s = max(totals.seconds, 1e-9)
    done = f"{totals.images} images, {totals.frames} video frames, {totals.faces} faces in {totals.seconds:.1f} s"
    rate = f"{totals.images / s:.1f} images/s, {totals.faces / s:.1f} faces/s"
    bad = f"; {len(totals.skipped)} inputs skipped" if totals.skipped else ""
    return f"{done} ({rate}){bad}; results: {', '.join(map(str, files))}"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        check_free(args.out, args.overwrite)
        pred, opts = build(args)
    except (ResultsExist, ValueError) as e:
        code = 1 if isinstance(e, (CheckpointError, DetectorError)) else 2
        print(f"error: {e}", file=sys.stderr)
        return code
    sources, problems = collect(args.inputs)
    totals = Totals(skipped=list(problems))
    for line in problems:
        say(f"skipped: {line}")
    writer = ResultWriter(args.out, pred.class_names)
    started = time.perf_counter()
    try:
        run_images(pred, [s for s in sources if s.kind == "image"], writer, opts, totals)
        for s in sources:
            if s.kind != "image":
                (run_video if s.kind == "video" else run_webcam)(pred, s, writer, opts, totals)
    except KeyboardInterrupt:
        say("interrupted: keeping the results of what was processed")
    except BaseException:
        writer.abort()
        raise
    totals.seconds = time.perf_counter() - started
    print(summary(totals, writer.close()))
    return 0
