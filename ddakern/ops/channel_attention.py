"""PyTorch math of the fused channel attention (the `torch` backend): same contract as kernels/.

out = x * k with k = softmax_c(logits) [* scale] [+ 1] per (n, c); the backward recomputes k from the
saved logits (and scale) and needs only x, logits and scale.
"""

from __future__ import annotations

import torch

from ddakern.ops.attention_residual import acc_dtype
from kernels._common import empty_ncp_like


def _coef(
    x: torch.Tensor, logits: torch.Tensor, scale: torch.Tensor | None, residual: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, k): a = softmax_c(logits) and k = a [* scale] [+ 1], N x C in the accumulation dtype."""
    a = torch.softmax(logits, dim=1, dtype=acc_dtype(x))
    k = a if scale is None else a * scale
    if residual:
        k = k + 1 if k is a else k.add_(1)
    return a, k


def forward(x: torch.Tensor, logits: torch.Tensor, scale: torch.Tensor | None, residual: bool) -> torch.Tensor:
    """x * k[n, c] in x's memory format (logits, scale: N x C)."""
    a = torch.softmax(logits, dim=1, dtype=acc_dtype(x))
    k = a if scale is None else a.mul_(scale)
    if residual:
        k.add_(1)
    out = empty_ncp_like(x)
    torch.mul(x, k[:, :, None, None], out=out)
    return out


def backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    logits: torch.Tensor,
    scale: torch.Tensor | None,
    residual: bool,
    need_x: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dx, dlogits, dscale); dx is empty when not needed, dscale when scale is None."""
    a, k = _coef(x, logits, scale, residual)
    acc = a.dtype
    dx = x.new_empty(0)
    if need_x:
        dx = empty_ncp_like(x)
        torch.mul(grad, k[:, :, None, None], out=dx)
    # g[n, c] = sum_p grad * x, products in acc (exact for half-precision inputs)
    g = (grad * x if grad.dtype == acc else grad.to(acc).mul_(x)).sum(dim=(2, 3))
    da = g if scale is None else g * scale
    dl = torch._softmax_backward_data(da, a, 1, acc).to(logits.dtype)
    ds = logits.new_empty(0) if scale is None else g.mul_(a).to(scale.dtype)
    return dx, dl, ds
