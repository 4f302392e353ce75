"""`python -m ddakern memory`: will a training step fit? Modes x batch sizes from a real CPU forward."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from ddakern import memory, recompute
from ddakern.atomic import write_text
from ddakern.cli import prog
from ddakern.models import create, list_models


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog(__name__, "python -m ddakern memory"), description=__doc__)
    p.add_argument("--model", default="resnet50_dda", help=f"one of: {', '.join(list_models())}")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--amp", choices=list(memory.AMP_DTYPES), default="none")
    p.add_argument("--recompute", choices=recompute.MODES, action="append",
                   help="mode(s) to show (repeatable); default: all three")  # fmt: skip
    p.add_argument("--budget", default=None, help="device memory, e.g. 24GiB or 80GB")
    p.add_argument("--batch-sizes", default="16,32,48,64,96,128,256")
    p.add_argument("--optimizer-states", type=int, default=2, help="per-parameter states (RAdam: 2)")
    p.add_argument("--num-classes", type=int, default=7)
    p.add_argument("--json", default=None, help="also write the estimates to this JSON file")
    return p.parse_args(argv)


def write_json(path: str, payload: dict) -> None:
    write_text(path, json.dumps(payload, indent=2))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        budget = None if args.budget is None else memory.parse_bytes(args.budget)
        sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
        if args.image_size < 32 or not sizes or min(sizes) < 1:
            raise ValueError("--image-size must be >= 32 and --batch-sizes positive integers")
        model = create(args.model, num_classes=args.num_classes)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    print(f"measuring {args.model} at {args.image_size}px, amp {args.amp} (real forwards at batch 2 and 3, CPU)")
    estimates = memory.measure(model, args.image_size, args.amp, args.recompute or recompute.MODES,
                               args.optimizer_states)  # fmt: skip
    print(memory.format_table(estimates, sizes, budget))
    if args.json:
        write_json(args.json, {
            "model": args.model, "image_size": args.image_size, "amp": args.amp, "budget": budget,
            "estimates": [e.__dict__ | {"max_batch": e.max_batch(budget) if budget else None} for e in estimates],
        })  # fmt: skip
    return 0
