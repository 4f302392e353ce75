"""Reference implementations: plain PyTorch ops, differentiated by autograd. They define the meaning."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention_residual(
    x: torch.Tensor,
    logits: torch.Tensor,
    bn_weight: torch.Tensor | None,
    bn_bias: torch.Tensor | None,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> torch.Tensor:
    """x * (1 + softmax_c(relu(batch_norm(logits)))), batch norm as nn.BatchNorm2d computes it."""
    batch_stats = training or running_mean is None or running_var is None
    z = F.batch_norm(logits, running_mean, running_var, bn_weight, bn_bias, batch_stats, momentum, eps)
    return x * (1 + torch.softmax(F.relu(z), dim=1))


def channel_attention(
    x: torch.Tensor, logits: torch.Tensor, scale: torch.Tensor | None = None, residual: bool = False
) -> torch.Tensor:
    """x * softmax_c(logits) [* scale] [+ x] with logits (and scale) N x C or N x C x 1 x 1."""
    n, c = x.shape[:2]
    y = x * torch.softmax(logits.reshape(n, c), dim=1).reshape(n, c, 1, 1)
    if scale is not None:
        y = y * scale.reshape(n, c, 1, 1)
    if residual:
        y = y + x
    return y
