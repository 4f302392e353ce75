"""Run by tests/test_recompute.py under torch.distributed.run (gloo): one DDP step per recompute mode.

Each rank writes, per mode, whether its gradients and batch-norm buffers equal mode "none"'s.
"""

from __future__ import annotations

import copy
import json
import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ddakern import models


def one_step(model: torch.nn.Module, mode: str, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    model.set_grad_checkpointing(mode)
    ddp = DistributedDataParallel(model)
    torch.manual_seed(7)  # the classifier's dropout: the same mask in every mode
    torch.nn.functional.cross_entropy(ddp(x), y).backward()
    state = {f"grad.{k}": p.grad.clone() for k, p in model.named_parameters()}
    state.update({f"buf.{k}": b.clone() for k, b in model.named_buffers()})
    return state


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    # both DDA block kinds (stage 2: spatial path + upsampler; stage 4: context only), narrow: the property
    # (recomputation changes no gradient or buffer under DDP) does not depend on the width
    base = models.create("resnet18_dda", num_classes=3, dda_stages=(2, 4), width=16, spatial_width=16).train()
    gen = torch.Generator().manual_seed(1 + rank)
    x, y = torch.randn(2, 3, 32, 32, generator=gen), torch.randint(0, 3, (2,), generator=gen)
    ref = one_step(copy.deepcopy(base), "none", x, y)
    result = {}
    for mode in ("dda", "all"):
        got = one_step(copy.deepcopy(base), mode, x, y)
        result[mode] = sorted(k for k in ref if not torch.equal(ref[k], got[k]))
    with open(f"{out}.rank{rank}", "w", encoding="utf-8") as f:
        json.dump(result, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main(sys.argv[1])
