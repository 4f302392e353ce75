"""`python -m ddakern check`: a short DDA forward/backward check on random data, with parameter counts."""

from __future__ import annotations

import argparse
import time

import torch

from ddakern.cli import prog
from ddakern.models import create


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog(__name__, "python -m ddakern check"), description=__doc__)
    parser.add_argument("--model", default="resnet34_dda")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--fused-ops", "--fused-kernels", dest="fused_ops", action="store_true")
    args = parser.parse_args(argv)
    model = create(args.model, fused_ops=args.fused_ops).train()
    print(f"{args.model}: {sum(p.numel() for p in model.parameters()):,} parameters")
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    y = torch.randint(0, 7, (args.batch_size,))
    t = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    grads = sum(p.grad is not None for p in model.parameters())
    print(
        f"forward+backward at {args.image_size}px, batch {args.batch_size}: loss {loss.item():.4f}, "
        f"{grads} parameter tensors got gradients, {time.perf_counter() - t:.2f} s"
    )
    return 0
