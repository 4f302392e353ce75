"""Run by tests/test_sync_bn.py as 2 gloo processes: one data-parallel step of a SyncBatchNorm-converted mask head.

Per case (the unfused reference, the torch backend, the triton backend under TRITON_INTERPRET=1,
channels_last), each rank runs one step on its shard of a batch and one step of the unconverted head
on the whole batch (one process on the union of both shards), and writes the largest absolute and
relative (to the largest magnitude) differences of the output, the running statistics and the
gradients to <out>.rank<rank> (JSON). The parameter gradients are averaged over the ranks as DDP does
(DDP itself refuses SyncBatchNorm layers on CPU modules).
"""

from __future__ import annotations

import copy
import json
import sys

import torch
import torch.distributed as dist
from torch import nn

import ddakern
from ddakern.dispatch import triton_available, triton_interpreting
from ddakern.layers import MaskHead

N, C, H, W = 2, 8, 5, 3  # per rank


def cases() -> list[tuple[str, bool, str, bool]]:
    """(name, fused_ops, backend, channels_last)."""
    out = [("unfused", False, "reference", False), ("torch", True, "torch", False)]
    if triton_available() and triton_interpreting():
        out.append(("triton-channels_last", True, "triton", True))
    return out


def step(head: nn.Module, x: torch.Tensor, u: torch.Tensor, proj: torch.Tensor) -> dict[str, torch.Tensor]:
    """One forward / backward with loss mean(out * proj): the output, the inputs' and parameters' grads."""
    x = x.detach().requires_grad_()
    u = u.detach().requires_grad_()
    out = head(x, u)
    (out * proj).mean().backward()
    return {"out": out.detach(), "grad.x": x.grad, "grad.u": u.grad}


def max_diff(got: torch.Tensor, want: torch.Tensor) -> tuple[float, float]:
    """(max |got - want|, that over max |want|)."""
    err = (got.double() - want.double()).abs().max().item()
    return err, err / max(want.double().abs().max().item(), 1e-30)


def run_case(fused: bool, backend: str, channels_last: bool, rank: int, world: int) -> dict[str, list[float]]:
    torch.manual_seed(0)
    base = MaskHead(C, fused_ops=fused)
    with torch.no_grad():  # fresh non-trivial batch-norm state
        base.bn.weight.uniform_(0.5, 1.5)
        base.bn.bias.uniform_(-0.5, 0.5)
        base.bn.running_mean.uniform_(-1, 1)
        base.bn.running_var.uniform_(0.5, 2)
    gen = torch.Generator().manual_seed(1)
    x, u, proj = (torch.randn(world * N, C, H, W, generator=gen) for _ in range(3))
    u[N:] = u[N:] * 3 + 2  # shards with different statistics: per-rank statistics would differ clearly
    if channels_last:
        x, u, proj = (t.contiguous(memory_format=torch.channels_last) for t in (x, u, proj))
    shard = slice(rank * N, (rank + 1) * N)

    one = copy.deepcopy(base)  # one process on the union of the shards
    with ddakern.use_ops_backend(backend):
        want = step(one, x, u, proj)
        synced = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(base))
        got = step(synced, x[shard], u[shard], proj[shard])
    for p in synced.parameters():  # DDP's gradient averaging
        dist.all_reduce(p.grad)
        p.grad /= world
    # the union's mean loss is the mean of the per-rank mean losses: averaged parameter gradients match;
    # the inputs' gradients are those of the per-rank loss, world times the union's
    pairs = {
        "out": (got["out"], want["out"][shard]),
        "grad.x": (got["grad.x"] / world, want["grad.x"][shard]),
        "grad.u": (got["grad.u"] / world, want["grad.u"][shard]),
    }
    for name in ("bn.weight", "bn.bias", "conv.weight"):
        p_got, p_want = synced.get_parameter(name), one.get_parameter(name)
        pairs[f"grad.{name}"] = (p_got.grad, p_want.grad)
    for name in ("bn.running_mean", "bn.running_var", "bn.num_batches_tracked"):
        pairs[name] = (synced.get_buffer(name), one.get_buffer(name))
    assert isinstance(synced.bn, nn.SyncBatchNorm)
    return {k: list(max_diff(a, b)) for k, (a, b) in pairs.items()}


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    result = {name: run_case(fused, backend, cl, rank, world) for name, fused, backend, cl in cases()}
    with open(f"{out}.rank{rank}", "w", encoding="utf-8") as f:
        json.dump(result, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1])
