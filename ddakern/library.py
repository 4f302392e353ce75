"""torch.library registration of the fused ops (namespace `ddakern`).

Each fused op is a custom op with a fake (meta) implementation and a hand-written backward that is
itself a custom op, so torch.compile(fullgraph=True) and torch.export trace them as single nodes.
The `backend` argument ("torch" or "triton") picks the PyTorch math in ddakern.ops or the Triton
kernels in kernels/ (imported lazily, so importing ddakern needs no triton).

Ops:
- bn_stats(logits, running_mean?, running_var?, batch_stats, momentum, eps, backend) -> (mean, rstd):
  per-channel statistics (fp32; fp64 for fp64 logits); mutates the running statistics when
  batch_stats and they are given. Not differentiable: callers pass detached logits, and the gradient
  through the statistics is part of attention_residual's backward.
- attention_residual(x, logits, weight, bias, mean, rstd, batch_stats, backend) -> out
- channel_attention(x, logits[N, C], scale[N, C]?, residual, backend) -> out
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ddakern.ops import attention_residual as ar_torch
from ddakern.ops import channel_attention as ca_torch
from kernels._common import empty_ncp_like


def _ar_impl(backend: str) -> Any:
    if backend == "triton":
        from kernels import attention_residual as ar_triton

        return ar_triton
    return ar_torch


def _ca_impl(backend: str) -> Any:
    if backend == "triton":
        from kernels import channel_attention as ca_triton

        return ca_triton
    return ca_torch


def _stat_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------------------------- bn_stats


@torch.library.custom_op("ddakern::bn_stats", mutates_args=("running_mean", "running_var"))
def bn_stats(
    logits: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    batch_stats: bool,
    momentum: float,
    eps: float,
    backend: str,
) -> tuple[Tensor, Tensor]:
    """Per-channel (mean, rstd) of the batch (batch_stats) or of the running statistics."""
    acc = _stat_dtype(logits)
    if not batch_stats:
        assert running_mean is not None and running_var is not None
        return running_mean.to(acc, copy=True), torch.rsqrt(running_var.to(acc) + eps)
    if backend == "triton" and acc == torch.float32:
        return _ar_impl(backend).bn_stats(logits, running_mean, running_var, momentum, eps)
    return ar_torch.bn_stats(logits, running_mean, running_var, momentum, eps)


@bn_stats.register_fake
def _(logits, running_mean, running_var, batch_stats, momentum, eps, backend):
    c = logits.shape[1]
    acc = _stat_dtype(logits)
    return logits.new_empty((c,), dtype=acc), logits.new_empty((c,), dtype=acc)


# ------------------------------------------------------------------------------------ attention_residual


@torch.library.custom_op("ddakern::attention_residual", mutates_args=())
def attention_residual(
    x: Tensor,
    logits: Tensor,
    weight: Tensor,
    bias: Tensor,
    mean: Tensor,
    rstd: Tensor,
    batch_stats: bool,
    backend: str,
) -> Tensor:
    """x * (1 + softmax_c(relu((logits - mean) * rstd * weight + bias)))."""
    return _ar_impl(backend).forward(x, logits, weight, bias, mean, rstd)


@attention_residual.register_fake
def _(x, logits, weight, bias, mean, rstd, batch_stats, backend):
    return empty_ncp_like(x)


@torch.library.custom_op("ddakern::attention_residual_backward", mutates_args=())
def attention_residual_backward(
    grad: Tensor,
    x: Tensor,
    logits: Tensor,
    weight: Tensor,
    bias: Tensor,
    mean: Tensor,
    rstd: Tensor,
    batch_stats: bool,
    need_x: bool,
    need_logits: bool,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dx, dlogits, dweight, dbias); dx / dlogits are empty tensors when not needed."""
    return _ar_impl(backend).backward(grad, x, logits, weight, bias, mean, rstd, batch_stats, need_x, need_logits)


@attention_residual_backward.register_fake
def _(grad, x, logits, weight, bias, mean, rstd, batch_stats, need_x, need_logits, backend):
    dx = empty_ncp_like(x) if need_x else x.new_empty(0)
    dl = empty_ncp_like(logits) if need_logits else logits.new_empty(0)
    return dx, dl, torch.empty_like(weight), torch.empty_like(bias)


def _ar_setup(ctx: Any, inputs: tuple, output: Tensor) -> None:
    x, logits, weight, bias, mean, rstd, batch_stats, backend = inputs
    ctx.save_for_backward(x, logits, weight, bias, mean, rstd)
    ctx.batch_stats = batch_stats
    ctx.backend = backend


def _ar_backward(ctx: Any, grad: Tensor) -> tuple:
    x, logits, weight, bias, mean, rstd = ctx.saved_tensors
    need = ctx.needs_input_grad
    dx, dl, dw, db = attention_residual_backward(
        grad, x, logits, weight, bias, mean, rstd, ctx.batch_stats, need[0], need[1], ctx.backend
    )
    return (
        dx if need[0] else None,
        dl if need[1] else None,
        dw if need[2] else None,
        db if need[3] else None,
        None,
        None,
        None,
        None,
    )


attention_residual.register_autograd(_ar_backward, setup_context=_ar_setup)


# ------------------------------------------------------------------------------------- channel_attention


@torch.library.custom_op("ddakern::channel_attention", mutates_args=())
def channel_attention(x: Tensor, logits: Tensor, scale: Tensor | None, residual: bool, backend: str) -> Tensor:
    """x * softmax_c(logits) [* scale] [+ x] with logits and scale N x C."""
    return _ca_impl(backend).forward(x, logits, scale, residual)


@channel_attention.register_fake
def _(x, logits, scale, residual, backend):
    return empty_ncp_like(x)


@torch.library.custom_op("ddakern::channel_attention_backward", mutates_args=())
def channel_attention_backward(
    grad: Tensor, x: Tensor, logits: Tensor, scale: Tensor | None, residual: bool, need_x: bool, backend: str
) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dlogits, dscale); dx is empty when not needed, dscale when scale is None."""
    return _ca_impl(backend).backward(grad, x, logits, scale, residual, need_x)


@channel_attention_backward.register_fake
def _(grad, x, logits, scale, residual, need_x, backend):
    dx = empty_ncp_like(x) if need_x else x.new_empty(0)
    ds = scale.new_empty(scale.shape) if scale is not None else logits.new_empty(0)
    return dx, logits.new_empty(logits.shape), ds


def _ca_setup(ctx: Any, inputs: tuple, output: Tensor) -> None:
    x, logits, scale, residual, backend = inputs
    ctx.has_scale = scale is not None
    ctx.save_for_backward(x, logits, scale if scale is not None else logits.new_empty(0))
    ctx.residual = residual
    ctx.backend = backend


def _ca_backward(ctx: Any, grad: Tensor) -> tuple:
    x, logits, scale = ctx.saved_tensors
    need = ctx.needs_input_grad
    dx, dl, ds = channel_attention_backward(
        grad, x, logits, scale if ctx.has_scale else None, ctx.residual, need[0], ctx.backend
    )
    return (
        dx if need[0] else None,
        dl if need[1] else None,
        ds if ctx.has_scale and need[2] else None,
        None,
        None,
    )


channel_attention.register_autograd(_ca_backward, setup_context=_ca_setup)
