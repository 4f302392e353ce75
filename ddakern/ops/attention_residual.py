"""PyTorch math of the fused attention residual (the `torch` backend): same contract as kernels/.

Statistics and the softmax are computed in fp32 (fp64 for fp64 inputs); the backward recomputes the
softmax from the saved logits and per-channel mean / rstd, exactly as the Triton kernels do.

Performance notes (CPU; the torch backend is what CPU training runs): each step is one ATen kernel
over the whole tensor, with as few passes and temporaries as possible. fp32 / fp64 inputs are never
copied; half-precision inputs are upcast once. Batch statistics: a sum then a centred sum of squares
(two vectorised passes, much faster than Welford-based var_mean). The normalisation is one pass of
batch norm's inference kernel with log2(e) folded into the affine, so that the softmax can use exp2
(3x faster than exp; also what tl.exp compiles to on GPUs) and, since relu makes its input >= 0,
needs no max pass. The backward uses softmax's, relu's and batch norm's own backward kernels.
"""

from __future__ import annotations

import torch

from kernels._common import empty_ncp_like

_DIMS = (0, 2, 3)
_LOG2E = 1.4426950408889634


def acc_dtype(t: torch.Tensor) -> torch.dtype:
    """Accumulation dtype: fp64 for fp64 tensors, fp32 otherwise."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """t in the memory format empty_ncp_like(ref) has (the fake implementations promise it)."""
    want = empty_ncp_like(ref) if t.stride() != ref.stride() else None
    if want is None or want.stride() == t.stride():
        return t
    return want.copy_(t)


def bn_stats(
    logits: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    momentum: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch mean and rstd per channel; running stats updated in place like nn.BatchNorm2d."""
    acc = acc_dtype(logits)
    total = logits.numel() // logits.shape[1]
    mean = logits.sum(_DIMS, dtype=acc).div_(total)
    # two passes (centred sum of squares): as accurate as Welford and much faster on CPU than var_mean
    var = (logits - mean.reshape(1, -1, 1, 1)).square_().sum(_DIMS).div_(total)
    if running_mean is not None and running_var is not None:
        unbias = total / max(total - 1, 1)
        if running_mean.dtype == acc and running_var.dtype == acc:
            running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
            running_var.mul_(1 - momentum).add_(var, alpha=momentum * unbias)
        else:
            running_mean.copy_(running_mean.to(acc) * (1 - momentum) + mean * momentum)
            running_var.copy_(running_var.to(acc) * (1 - momentum) + var * (momentum * unbias))
    return mean, var.add_(eps).rsqrt_()


def _scaled_logits(
    logits: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor
) -> torch.Tensor:
    """relu(z) * log2(e) with z = (logits - mean) * rstd * weight + bias, in mean's dtype (a new tensor).

    Scaling by log2(e) (folded into the per-channel affine; positive, so the relu mask is unchanged)
    lets the softmax use exp2, much faster than exp on CPU; it is also what tl.exp compiles to on GPUs.
    The affine is one pass of batch norm's inference kernel: unit variance and eps 0 make its
    per-channel factor exactly `scale`.
    """
    acc = mean.dtype
    scale = (rstd * _LOG2E).mul_(weight)
    if logits.dtype != acc:
        logits = logits.to(acc)
    z = torch.native_batch_norm(logits, scale, bias.to(acc) * _LOG2E, mean, torch.ones_like(mean), False, 0.0, 0.0)[0]
    return z.clamp_min_(0)


def _softmax2(z2: torch.Tensor, inplace: bool) -> torch.Tensor | None:
    """softmax over dim 1 of z2 / log2(e) for z2 >= 0 as 2^z2 / sum_c 2^z2 (in z2's memory if inplace).

    z2 >= 0 (after the relu) means 2^z2 >= 1 never underflows, so no per-position max is needed unless
    the sum overflows (z2 near 128, rare): then this returns None and the caller uses _softmax2_shifted.
    """
    e = z2.exp2_() if inplace else z2.exp2()
    total = e.sum(dim=1, keepdim=True)
    if not bool(total.isfinite().all()):
        return None
    return e.div_(total)  # a division (not a reciprocal): exact 1 for a single channel


def _softmax2_shifted(z2: torch.Tensor) -> torch.Tensor:
    """softmax over dim 1 of z2 / log2(e) with the per-position max subtracted (a new tensor)."""
    e = (z2 - z2.amax(dim=1, keepdim=True)).exp2_()
    return e.div_(e.sum(dim=1, keepdim=True))


def forward(
    x: torch.Tensor,
    logits: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
) -> torch.Tensor:
    """out = x * (1 + softmax_c(relu((logits - mean) * rstd * weight + bias))), in x's memory format."""
    m = _softmax2(_scaled_logits(logits, weight, bias, mean, rstd), inplace=True)
    if m is None:
        m = _softmax2_shifted(_scaled_logits(logits, weight, bias, mean, rstd))
    out = empty_ncp_like(x)
    if x.dtype == m.dtype:
        torch.addcmul(x, x, m, out=out)  # x * (1 + m)
    else:
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
    lg = logits.to(acc)  # a copy only for half-precision logits, then reused by the batch-norm backward
    zr = _scaled_logits(lg, weight, bias, mean, rstd)
    m = _softmax2(zr, inplace=False)
    if m is None:
        m = _softmax2_shifted(zr)
    dx = x.new_empty(0)
    if need_x:
        dx = empty_ncp_like(x)
        torch.addcmul(grad, grad, m, out=dx)  # grad * (1 + m)
    dm = grad.to(acc)
    dm = dm.mul_(x) if dm is not grad else grad * x  # d out / d m
    dz = torch._softmax_backward_data(dm, m, 1, acc)
    del dm, m
    dz = torch.ops.aten.threshold_backward.grad_input(dz, zr, 0, grad_input=dz)  # relu: where z > 0
    del zr
    w = weight.to(acc)
    mask = [need_logits, True, True]
    if batch_stats:
        dl, dw, db = torch.ops.aten.native_batch_norm_backward(dz, lg, w, None, None, mean, rstd, True, 0.0, mask)
    else:  # fixed statistics: var = rstd^-2 with eps 0 reproduces invstd = rstd
        var = rstd.reciprocal().square_()
        dl, dw, db = torch.ops.aten.native_batch_norm_backward(dz, lg, w, mean, var, None, None, False, 0.0, mask)
    if need_logits:
        dl = _like(dl, logits).to(logits.dtype) if dl.dtype != logits.dtype else _like(dl, logits)
    else:
        dl = logits.new_empty(0)
    return dx, dl, dw.to(weight.dtype), db.to(bias.dtype)
