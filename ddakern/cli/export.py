"""`python -m ddakern export CHECKPOINT --format onnx|torchscript|exported-program|pt [--quantize int8] [--out FILE]`.

Fused ops are lowered to standard operators (the model is rebuilt without them, same weights); the
batch axis is dynamic. A parity check runs in the same command: the exported file (ONNX Runtime for
ONNX) against PyTorch on random inputs and on a real face, max abs diff printed; it fails (exit 1)
above --tolerance (relative to the largest logit). `--format pt` writes the weights-only file
(weights, classes, architecture, config; no optimiser or RNG state), safe for torch.load(weights_only=True).

`--format onnx --quantize int8` writes a statically quantized model (ONNX Runtime's quantizer, int8
convolutions but the first, QDQ, per-channel weights), calibrated on the run's own training images (the data
folder its checkpoint records, or --calibration), then compares its top-1 with the fp32 model's on the
run's test images and fails (exit 1) below --min-agreement. Exit codes: 0 done, 1 failed, 2 bad command line.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from ddakern.cli import prog
from ddakern.extras import MissingExtra, require
from ddakern.inference.calibration import CalibrationError, face_images, run_data_root
from ddakern.inference.checkpoint import CheckpointError, ModelSpec, model_of, read_checkpoint
from ddakern.inference.export import FORMATS, export, export_weights, parity, runner


def real_batch(spec: ModelSpec, sample: Path | None) -> tuple[str, torch.Tensor] | None:
    """A real face, preprocessed as predict does: --sample IMAGE, else skimage's astronaut if installed."""
    from ddakern.inference.detect import HaarDetector, crop, square_box
    from ddakern.inference.images import preprocess, read_image

    if sample is not None:
        rgb, name = read_image(sample), str(sample)
    else:
        try:
            from skimage import data
        except ImportError:
            return None
        rgb, name = data.astronaut(), "skimage.data.astronaut()"
    try:
        faces = HaarDetector()(rgb)
    except ValueError:
        faces = []
    face = crop(rgb, square_box(faces[0].box, 0.15)) if faces else rgb
    return name, preprocess([face], spec.image_size, *spec.mean_std)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog(__name__, "python -m ddakern export"), description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--format", required=True, choices=tuple(FORMATS))
    p.add_argument("--out", type=Path, help="output file (default: next to the checkpoint)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--sample", type=Path, help="a real photo for the parity check (default: skimage astronaut)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="relative parity tolerance")
    q = p.add_argument_group("int8 quantization (ONNX)")
    q.add_argument("--quantize", choices=("int8",), help="static int8 quantization, calibrated on face images")
    q.add_argument(
        "--calibration", type=Path,
        help="face crops: a folder of images or a FER2013-style CSV; its train / test parts calibrate and check "
        "(default: the data folder the checkpoint's run trained on)",
    )  # fmt: skip
    q.add_argument("--calibration-images", type=int, default=256, help="training images to calibrate on")
    q.add_argument("--check-images", type=int, default=1000, help="test images for the agreement check")
    q.add_argument("--min-agreement", type=float, default=0.99, help="int8 vs fp32 top-1 agreement required")
    return p


def default_out(args: argparse.Namespace) -> Path:
    suffix = ".int8.onnx" if args.quantize else FORMATS[args.format]
    return args.checkpoint.with_suffix(suffix)


def bad_command_line(args: argparse.Namespace, out: Path) -> str | None:
    """Why the command line cannot run (exit 2), or None."""
    if out.exists() and not args.overwrite:
        return f"{out} exists; pass --overwrite or choose another --out"
    if args.format == "exported-program" and out.suffix != ".pt2":
        return f"{out}: torch.export programs must be saved as .pt2"
    if args.quantize and args.format != "onnx":
        return f"--quantize {args.quantize} needs --format onnx"
    if args.calibration_images < 1 or args.check_images < 1 or not 0 <= args.min_agreement <= 1:
        return "--calibration-images and --check-images must be >= 1, --min-agreement in [0, 1]"
    return None


def calibration_sets(args: argparse.Namespace, ckpt: dict) -> tuple[list, str, list, str]:
    """(training images, what they are, test images, what they are) for int8 calibration and its check;
    read before any export work, so a missing data folder fails at once."""
    source = args.calibration or run_data_root(ckpt)
    if source is None:
        raise CalibrationError(f"{args.checkpoint}: the checkpoint records no data folder; pass --calibration DIR")
    if not source.exists():
        raise CalibrationError(f"{source}: the run's data folder is not here; pass --calibration DIR")
    train, train_note = face_images(source, "train", args.calibration_images)
    if not train:
        raise CalibrationError(f"{source}: no training images found; pass --calibration DIR (face crops)")
    test, test_note = face_images(source, "test", args.check_images)
    if not test:
        test, test_note = train, f"the {len(train)} calibration images (no test images under {source})"
    return train, train_note, test, test_note


def quantize_step(args: argparse.Namespace, ckpt: dict, spec: ModelSpec, fp32: Path, out: Path) -> float:
    """Quantize `fp32` into `out` on the run's training images; returns the top-1 agreement on its test images."""
    from ddakern.inference.images import preprocess
    from ddakern.inference.quantize import agreement, logits, quantize_int8, session

    train, train_note, test, test_note = args.calibration_sets
    print(f"int8 calibration on {train_note}")
    quantize_int8(fp32, out, preprocess(train, spec.image_size, *spec.mean_std).numpy())
    x_test = preprocess(test, spec.image_size, *spec.mean_std).numpy()
    agree = agreement(logits(session(fp32), x_test), logits(session(out), x_test))
    print(f"int8 vs fp32 top-1 agreement: {agree:.2%} on {test_note}")
    return agree


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:  # decided before any work: ONNX needs onnx (writing) and onnxruntime (the parity check, quantization)
        require(["onnx", "onnxruntime"] if args.format == "onnx" else [], f"export --format {args.format}")
    except MissingExtra as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = args.out or default_out(args)
    problem = bad_command_line(args, out)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    agree = None
    with tempfile.TemporaryDirectory(prefix=".export.", dir=out.parent if out.parent.is_dir() else None) as work:
        target = Path(work) / "fp32.onnx" if args.quantize else out
        try:
            ckpt = read_checkpoint(args.checkpoint)
            args.calibration_sets = calibration_sets(args, ckpt) if args.quantize else None
            model, spec = model_of(ckpt, args.checkpoint, fused_ops=False)
            with warnings.catch_warnings():  # tracer and quantizer notes (fixed sizes: fine)
                warnings.simplefilter("ignore")
                if args.format == "pt":
                    export_weights(ckpt, target, args.checkpoint)
                else:
                    export(model, spec, args.format, target)
            run = runner(args.format, target)
            checks = [("random, batch 3", torch.randn(3, 3, spec.image_size, spec.image_size))]
            real = real_batch(spec, args.sample)
            checks += [(f"real face ({real[0]})", real[1])] if real else []
            worst = report_parity(model, run, checks, args.format)
            if args.quantize:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    agree = quantize_step(args, ckpt, spec, target, out)
        except (CheckpointError, CalibrationError, ValueError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    kind = f" ({args.quantize})" if args.quantize else ""
    print(f"exported {spec.model_name} ({spec.image_size} px, {len(spec.class_names)} classes) to {out}{kind}")
    if worst > args.tolerance:
        print(f"error: parity {worst:.3g} above tolerance {args.tolerance:g}", file=sys.stderr)
        return 1
    if agree is not None and not agree >= args.min_agreement:
        need = f"{args.min_agreement:.2%}"
        print(f"error: int8 top-1 agreement {agree:.2%} below --min-agreement {need}", file=sys.stderr)
        return 1
    return 0


def report_parity(model: torch.nn.Module, run, checks: list[tuple[str, torch.Tensor]], fmt: str) -> float:
    """Print the parity of the exported file against PyTorch on each check batch; the worst relative diff."""
    engine = {"onnx": "ONNX Runtime", "pt": "weights-only file"}.get(fmt, fmt)
    worst = 0.0
    for name, x in checks:
        diff, rel = parity(model, run, x)
        worst = max(worst, rel)
        print(f"parity {engine} vs PyTorch, {name}: max abs diff {diff:.3g} (relative {rel:.3g})")
    return worst
