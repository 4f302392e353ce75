"""Public fused ops of DDA: input checks, backend dispatch (ddakern.dispatch) and the torch.library ops."""

from __future__ import annotations

import torch
from torch import Tensor

import ddakern.library  # noqa: F401  (registers torch.ops.ddakern.*)
from ddakern.dispatch import backend_for
from ddakern.ops import reference

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_tensor(name: str, t: object, op: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOATS:
        raise TypeError(f"{op}: {name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    return t


def _check_like(name: str, t: Tensor, x: Tensor, shapes: tuple[tuple[int, ...], ...], op: str) -> None:
    if tuple(t.shape) not in shapes:
        want = " or ".join(str(tuple(s)) for s in shapes)
        raise ValueError(f"{op}: {name} must have shape {want}, got {tuple(t.shape)}")
    if t.device != x.device:
        raise ValueError(f"{op}: {name} is on {t.device} but x is on {x.device}")


def _check_x(x: object, op: str) -> Tensor:
    x = _check_tensor("x", x, op)
    if x.dim() != 4:
        raise ValueError(f"{op}: x must be N x C x H x W, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{op}: x must not be empty, got shape {tuple(x.shape)}")
    return x


def attention_residual(
    x: Tensor,
    logits: Tensor,
    bn_weight: Tensor | None,
    bn_bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """x * (1 + softmax_c(relu(batch_norm(logits)))): DDA's mask head fused with the residual.

    Batch norm uses batch statistics when `training` (or when no running statistics are given) and
    then updates running_mean / running_var in place like nn.BatchNorm2d; otherwise the running ones.
    """
    op = "attention_residual"
    x = _check_x(x, op)
    logits = _check_tensor("logits", logits, op)
    _check_like("logits", logits, x, (tuple(x.shape),), op)
    if logits.dtype != x.dtype:
        raise TypeError(f"{op}: logits dtype {logits.dtype} differs from x dtype {x.dtype}")
    c = x.shape[1]
    for name, t in (("bn_weight", bn_weight), ("bn_bias", bn_bias), ("running_mean", running_mean),
                    ("running_var", running_var)):  # fmt: skip
        if t is not None:
            _check_like(name, _check_tensor(name, t, op), x, ((c,),), op)
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{op}: give both running_mean and running_var or neither")
    batch_stats = bool(training) or running_mean is None
    if batch_stats and x.numel() // c < 2:
        raise ValueError(f"{op}: batch statistics need more than 1 value per channel, got shape {tuple(x.shape)}")
    backend = backend_for(x)
    if backend == "reference":
        return reference.attention_residual(
            x, logits, bn_weight, bn_bias, running_mean, running_var, training, momentum, eps
        )
    if bn_weight is None:
        bn_weight = torch.ones(c, device=x.device, dtype=torch.float32)
    if bn_bias is None:
        bn_bias = torch.zeros(c, device=x.device, dtype=torch.float32)
    mean, rstd = torch.ops.ddakern.bn_stats(
        logits.detach(), running_mean, running_var, batch_stats, float(momentum), float(eps), backend
    )
    return torch.ops.ddakern.attention_residual(x, logits, bn_weight, bn_bias, mean, rstd, batch_stats, backend)


def channel_attention(x: Tensor, logits: Tensor, scale: Tensor | None = None, residual: bool = False) -> Tensor:
    """x * softmax_c(logits) [* scale] [+ x]; logits and scale are N x C or N x C x 1 x 1."""
    op = "channel_attention"
    x = _check_x(x, op)
    n, c = x.shape[:2]
    shapes = ((n, c), (n, c, 1, 1))
    logits = _check_tensor("logits", logits, op)
    _check_like("logits", logits, x, shapes, op)
    if logits.dtype != x.dtype:
        raise TypeError(f"{op}: logits dtype {logits.dtype} differs from x dtype {x.dtype}")
    if scale is not None:
        scale = _check_tensor("scale", scale, op)
        _check_like("scale", scale, x, shapes, op)
        if scale.dtype != x.dtype:
            raise TypeError(f"{op}: scale dtype {scale.dtype} differs from x dtype {x.dtype}")
    backend = backend_for(x)
    if backend == "reference":
        return reference.channel_attention(x, logits, scale, residual)
    logits2 = logits.reshape(n, c)
    scale2 = scale.reshape(n, c) if scale is not None else None
    return torch.ops.ddakern.channel_attention(x, logits2, scale2, bool(residual), backend)
