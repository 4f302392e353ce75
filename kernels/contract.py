"""The one interface each fused op's two backends follow (pure torch, no triton).

An op's `torch` backend (its PyTorch math in ddakern.ops.<op>) and its `triton` backend (the launchers
in kernels/<op>.py) are interchangeable: ddakern's torch.library ops call whichever ddakern.dispatch
picks. Their arguments are defined once here, as the bundles the forward takes and the backward gets
back, and their contract once, as a Protocol per op that both modules follow (tests/test_op_contract.py
checks the signatures). It lives on the kernels side because ddakern imports kernels, never back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

from torch import Tensor

# ------------------------------------------------------------------------------- attention residual


class BatchNormState(NamedTuple):
    """nn.BatchNorm2d's state for the batch statistics: running ones updated in place (or None), momentum, eps."""

    running_mean: Tensor | None
    running_var: Tensor | None
    momentum: float
    eps: float


class ResidualTensors(NamedTuple):
    """The attention residual's tensors: what its forward reads and what it saves for the backward.

    x and logits are N x C x H x W (any strides); weight / bias the batch-norm affine and mean / rstd
    the per-channel statistics it normalises with (fp32, fp64 for fp64 logits), all C.
    """

    x: Tensor
    logits: Tensor
    weight: Tensor
    bias: Tensor
    mean: Tensor
    rstd: Tensor


class ResidualGrads(NamedTuple):
    """What the attention residual's backward computes: dx if need_x, dlogits if need_logits.

    batch_stats: mean / rstd are the batch's, so dlogits carries the gradient through them too.
    sync_means (synchronised batch statistics): maps this rank's per-channel sums of dz and dz * xhat
    (2 x C) to their means over every rank's batch; dlogits is centred with those.
    """

    need_x: bool
    need_logits: bool
    batch_stats: bool
    sync_means: Callable[[Tensor], Tensor] | None = None


class AttentionResidualBackend(Protocol):
    """ddakern.ops.attention_residual's torch math and kernels.attention_residual's launchers."""

    def bn_stats(self, logits: Tensor, state: BatchNormState) -> tuple[Tensor, Tensor]:
        """Batch mean and rstd per channel of N x C x H x W logits; running statistics updated in place
        like nn.BatchNorm2d."""
        ...

    def forward(self, t: ResidualTensors) -> Tensor:
        """out = x * (1 + softmax_c(relu((logits - mean) * rstd * weight + bias))), in x's memory format."""
        ...

    def backward(self, grad: Tensor, t: ResidualTensors, want: ResidualGrads) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Gradients (dx, dlogits, dweight, dbias); dx / dlogits are empty when not wanted."""
        ...


# ---------------------------------------------------------------------------------- channel attention


class ChannelInputs(NamedTuple):
    """The channel attention's inputs: x (N x C x H x W), logits and the optional scale (N x C), and
    whether x is added back (residual): out = x * k with k = softmax_c(logits) [* scale] [+ 1]."""

    x: Tensor
    logits: Tensor
    scale: Tensor | None
    residual: bool


class ChannelAttentionBackend(Protocol):
    """ddakern.ops.channel_attention's torch math and kernels.channel_attention's launchers."""

    def forward(self, t: ChannelInputs) -> Tensor:
        """x * k[n, c] in x's memory format."""
        ...

    def backward(self, grad: Tensor, t: ChannelInputs, need_x: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Gradients (dx, dlogits, dscale); dx is empty when not needed, dscale when scale is None."""
        ...
