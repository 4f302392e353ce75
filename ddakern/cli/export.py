"""`python -m ddakern export CHECKPOINT --format onnx|torchscript|exported-program [--out FILE]`.

Fused ops are lowered to standard operators (the model is rebuilt without them, same weights); the
batch axis is dynamic. A parity check runs in the same command: the exported file (ONNX Runtime for
ONNX) against PyTorch on random inputs and on a real face, max abs diff printed; it fails (exit 1)
above --tolerance (relative to the largest logit). Exit codes: 0 done, 1 failed, 2 bad command line.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

from ddakern.inference.checkpoint import CheckpointError, ModelSpec, load_model
from ddakern.inference.export import FORMATS, export, parity, runner
from ddakern.inference.requires import MissingExtra, require


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ddakern export", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--format", required=True, choices=tuple(FORMATS))
    p.add_argument("--out", type=Path, help="output file (default: next to the checkpoint)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--sample", type=Path, help="a real photo for the parity check (default: skimage astronaut)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="relative parity tolerance")
    args = p.parse_args(argv)
    try:  # decided before any work: ONNX needs onnx (writing) and onnxruntime (the parity check)
        require(["onnx", "onnxruntime"] if args.format == "onnx" else [], f"export --format {args.format}")
    except MissingExtra as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = args.out or args.checkpoint.with_suffix(FORMATS[args.format])
    if out.exists() and not args.overwrite:
        print(f"error: {out} exists; pass --overwrite or choose another --out", file=sys.stderr)
        return 2
    if args.format == "exported-program" and out.suffix != ".pt2":
        print(f"error: {out}: torch.export programs must be saved as .pt2", file=sys.stderr)
        return 2
    try:
        model, spec = load_model(args.checkpoint, fused_ops=False)
        with warnings.catch_warnings():  # tracer notes on shape-dependent Python branches (fixed sizes: fine)
            warnings.simplefilter("ignore")
            export(model, spec, args.format, out)
        run = runner(args.format, out)
        checks = [("random, batch 3", torch.randn(3, 3, spec.image_size, spec.image_size))]
        real = real_batch(spec, args.sample)
        checks += [(f"real face ({real[0]})", real[1])] if real else []
    except (CheckpointError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    engine = "ONNX Runtime" if args.format == "onnx" else args.format
    worst = 0.0
    for name, x in checks:
        diff, rel = parity(model, run, x)
        worst = max(worst, rel)
        print(f"parity {engine} vs PyTorch, {name}: max abs diff {diff:.3g} (relative {rel:.3g})")
    print(f"exported {spec.model_name} ({spec.image_size} px, {len(spec.class_names)} classes) to {out}")
    if worst > args.tolerance:
        print(f"error: parity {worst:.3g} above tolerance {args.tolerance:g}", file=sys.stderr)
        return 1
    return 0
