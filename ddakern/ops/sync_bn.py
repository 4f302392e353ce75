"""Batch statistics over a process group, as nn.SyncBatchNorm computes them, for ops that normalise inside.

`nn.SyncBatchNorm.convert_sync_batchnorm` swaps batch-norm modules, but an op that takes a batch
norm's parameters and normalises inside (ddakern.ops.attention_residual: DDA's mask head) never calls
the module. Such an op is given the module's group (`group_of`) and synchronises as torch's
SyncBatchNorm does:
- forward: all-gather each rank's per-channel (mean, rstd, count) and merge them (`gather_stats`),
  running statistics updated with the global unbiased variance (`update_running`);
- backward: all-reduce the per-channel sums of dz and dz * xhat (`global_means`) before the logits'
  gradient is formed; the weight / bias gradients stay per rank (DDP averages them, as it does for
  SyncBatchNorm's).
`batch_norm` is the plain-PyTorch reference: F.batch_norm over the union of every rank's batch,
differentiated by autograd through an all-reduce whose backward all-reduces the gradient
(`AllReduceSum`). Everything here runs on any device and backend (gloo on CPU included), unlike
torch's SyncBatchNorm (CUDA / XPU only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ddakern.ops._common import acc_dtype

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

_DIMS = (0, 2, 3)


def group_of(bn: nn.Module) -> ProcessGroup | None:
    """The group `bn` synchronises over now, else None: torch's SyncBatchNorm rule (a converted batch
    norm in training mode, an initialised process group of more than one rank)."""
    if not (isinstance(bn, nn.SyncBatchNorm) and bn.training and dist.is_available() and dist.is_initialized()):
        return None
    group = bn.process_group or dist.group.WORLD
    return group if dist.get_world_size(group) > 1 else None


def _channel(t: Tensor) -> Tensor:
    return t.reshape(1, -1, 1, 1)


def gather_stats(
    mean: Tensor, rstd: Tensor, count: int, eps: float, group: ProcessGroup
) -> tuple[Tensor, Tensor, Tensor]:
    """(mean, biased variance, count) over every rank's batch, from this rank's per-channel mean and
    rstd = 1 / sqrt(var + eps) over `count` values; one all-gather, merged as Chan's parallel variance.
    The count stays a tensor (no host-device sync)."""
    c = mean.numel()
    combined = torch.cat([mean, rstd, mean.new_full((1,), float(count))])
    world = dist.get_world_size(group)
    if dist.get_backend(group) == "gloo":  # gloo has no all_gather_into_tensor
        parts = [torch.empty_like(combined) for _ in range(world)]
        dist.all_gather(parts, combined, group=group)
        gathered = torch.stack(parts)
    else:
        gathered = combined.new_empty((world, combined.numel()))
        dist.all_gather_into_tensor(gathered, combined, group=group)
    means, rstds, counts = gathered[:, :c], gathered[:, c : 2 * c], gathered[:, 2 * c :]
    total = counts.sum()
    mean_all = (means * counts).sum(0) / total
    var_each = rstds.pow(-2).sub_(eps).clamp_min_(0)
    var_all = ((var_each + (means - mean_all).square()) * counts).sum(0) / total
    return mean_all, var_all, total


@torch.no_grad()
def update_running(
    running_mean: Tensor, running_var: Tensor, mean: Tensor, var: Tensor, total: Tensor, momentum: float
) -> None:
    """Running statistics updated in place like nn.BatchNorm2d's, from the batch mean and biased
    variance over `total` values (the variance unbiased by total / (total - 1))."""
    unbias = total / (total - 1).clamp_min(1)
    running_mean.copy_(running_mean.to(mean.dtype) * (1 - momentum) + mean * momentum)
    running_var.copy_(running_var.to(var.dtype) * (1 - momentum) + var * unbias * momentum)


def global_means(sums: Tensor, total: Tensor, group: ProcessGroup) -> Tensor:
    """Per-channel sums of this rank (any shape, fp32/fp64) summed over the group, divided by `total`."""
    sums = sums.contiguous().clone()
    dist.all_reduce(sums, group=group)
    return sums.div_(total)


class AllReduceSum(torch.autograd.Function):
    """Sum over the group; backward: the gradients summed over the group (each rank's loss depends on
    every rank's input). torch.distributed.nn.functional.all_reduce, deprecated from torch 2.14 on."""

    @staticmethod
    def forward(ctx: Any, t: Tensor, group: ProcessGroup) -> Tensor:
        ctx.group = group
        t = t.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(t, group=group)
        return t

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return AllReduceSum.apply(grad, ctx.group), None


def batch_norm(
    logits: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    momentum: float,
    eps: float,
    group: ProcessGroup,
) -> Tensor:
    """F.batch_norm(training=True) with the statistics of every rank's batch in `group` (the reference).

    Plain PyTorch ops in fp32 (fp64 for fp64 logits) and AllReduceSum, so that autograd yields
    synchronised batch norm's backward.
    """
    c = logits.shape[1]
    lg = logits.to(acc_dtype(logits))
    sums = AllReduceSum.apply(torch.cat([lg.sum(_DIMS), lg.new_full((1,), lg.numel() // c)]), group)
    total = sums[c:].detach()
    mean = sums[:c] / total
    xmu = lg - _channel(mean)
    var = AllReduceSum.apply(xmu.square().sum(_DIMS), group) / total
    z = xmu * _channel((var + eps).rsqrt())
    if weight is not None:
        z = z * _channel(weight)
    if bias is not None:
        z = z + _channel(bias)
    if running_mean is not None and running_var is not None:
        update_running(running_mean, running_var, mean.detach(), var.detach(), total[0], momentum)
    return z.to(logits.dtype)
