"""Run by tests/test_train_modern.py under torch.distributed.run (gloo, 2 processes): two SAM updates of
2 accumulated micro-batches each through the engine's Trainer (DDP-wrapped), with every batch-level modern
method on (RandomErasing, mixup/cutmix, label smoothing, EMA), each rank on its own half of every batch;
writes the parameters and the EMA weights each rank ends with."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(__file__))
from modern_helpers import DDP_OPTIONS, batches, mlp, seed_rank_generators, trainer  # noqa: E402

from train.distributed import DistEnv  # noqa: E402


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    t = trainer(mlp(), DistEnv(rank, 2, rank, torch.device("cpu")), **DDP_OPTIONS)
    seed_rank_generators(rank)
    data = batches(4, 8, seed=3)  # the whole batches; this rank takes its half of each
    half = [(x[rank * 4 : rank * 4 + 4], y[rank * 4 : rank * 4 + 4]) for x, y in data]
    t._update(half[:2], 0)
    t._update(half[2:], 2)
    state = {k: v.detach().clone() for k, v in t.net.state_dict().items()}
    state.update({f"ema.{k}": v.detach().clone() for k, v in t.ema.state_dict().items()})
    torch.save(state, f"{out}.rank{rank}")
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1])
