"""Memory-layout helpers shared by the Triton launchers and ddakern's torch backend (pure torch, no triton).

They live on the kernels side because ddakern imports kernels and never the other way round.
"""

from __future__ import annotations

import torch
from torch import Tensor


def mergeable(t: Tensor) -> bool:
    """Whether a 4-D N x C x H x W tensor can be viewed as N x C x (H*W) without copying."""
    _, _, h, w = t.shape
    return w == 1 or h == 1 or t.stride(2) == w * t.stride(3)


def empty_ncp_like(t: Tensor) -> Tensor:
    """torch.empty_like(t) (same memory format) unless that layout cannot merge H and W: then contiguous."""
    out = torch.empty_like(t)
    return out if mergeable(out) else torch.empty_like(t, memory_format=torch.contiguous_format)


def like_layout(t: Tensor, ref: Tensor) -> Tensor:
    """t in the memory format empty_ncp_like(ref) has (the fake implementations promise it)."""
    if t.stride() == ref.stride():
        return t
    want = empty_ncp_like(ref)
    return t if want.stride() == t.stride() else want.copy_(t)
