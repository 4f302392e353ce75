"""PyTorch math of the fused attention residual (the `torch` backend): same contract as kernels/.

Statistics and the softmax are computed in fp32 (fp64 for fp64 inputs); the backward recomputes the
softmax from the saved logits and per-channel mean / rstd, exactly as the Triton kernels do.
"""

from __future__ import annotations

import torch

from kernels._common import empty_ncp_like


def acc_dtype(t: torch.Tensor) -> torch.dtype:
    """Accumulation dtype: fp64 for fp64 tensors, fp32 otherwise."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _chan(v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return v.to(dtype).reshape(1, -1, 1, 1)


def bn_stats(
    logits: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    momentum: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch mean and rstd per channel; running stats updated in place like nn.BatchNorm2d."""
    acc = acc_dtype(logits)
    var, mean = torch.var_mean(logits.to(acc), dim=(0, 2, 3), correction=0)
    if running_mean is not None and running_var is not None:
        total = logits.numel() // logits.shape[1]
        unbiased = var * (total / max(total - 1, 1))
        running_mean.copy_(running_mean.to(acc) * (1 - momentum) + mean * momentum)
        running_var.copy_(running_var.to(acc) * (1 - momentum) + unbiased * momentum)
    return mean, torch.rsqrt(var + eps)


def _recompute(
    logits: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    acc = mean.dtype
    xhat = (logits.to(acc) - _chan(mean, acc)) * _chan(rstd, acc)
    zp = xhat * _chan(weight, acc) + _chan(bias, acc)
    return xhat, zp, torch.softmax(zp.clamp_min(0), dim=1)


def forward(
    x: torch.Tensor,
    logits: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
) -> torch.Tensor:
    """out = x * (1 + softmax_c(relu((logits - mean) * rstd * weight + bias))), in x's memory format."""
    _, _, m = _recompute(logits, weight, bias, mean, rstd)
    out = empty_ncp_like(x)
    torch.mul(x, m.add_(1), out=out)
    return out


def backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    logits: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    batch_stats: bool,
    need_x: bool,
    need_logits: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dx, dlogits, dweight, dbias); dx / dlogits are empty when not needed."""
    acc = mean.dtype
    xhat, zp, m = _recompute(logits, weight, bias, mean, rstd)
    dy = grad.to(acc)
    dx = x.new_empty(0)
    if need_x:
        dx = empty_ncp_like(x)
        torch.mul(dy, 1 + m, out=dx)
    dm = dy * x.to(acc)
    dbn = m * (dm - (m * dm).sum(dim=1, keepdim=True))
    dbn = torch.where(zp > 0, dbn, 0)
    gsum = dbn.sum(dim=(0, 2, 3))
    gsumx = (dbn * xhat).sum(dim=(0, 2, 3))
    dl = logits.new_empty(0)
    if need_logits:
        gain = _chan(weight, acc) * _chan(rstd, acc)
        if batch_stats:
            total = logits.numel() // logits.shape[1]
            dbn = dbn - _chan(gsum / total, acc) - xhat * _chan(gsumx / total, acc)
        dl = empty_ncp_like(logits)
        torch.mul(gain, dbn, out=dl)
    return dx, dl, gsumx.to(weight.dtype), gsum.to(bias.dtype)
