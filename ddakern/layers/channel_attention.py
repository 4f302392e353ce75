"""Channel attention ("multi-level attention", ARM): x * softmax_c(BN(Conv1x1(GAP(x))))."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ddakern.layers.fused import FusedOpLayer
from ddakern.layers.mask_head import gate_layer
from ddakern.ops import channel_attention as ca_op


class ChannelAttention(FusedOpLayer):
    """Gates each channel of x by a softmax over channels of its pooled descriptor.

    With `scale` (N x C x 1 x 1) the gated map is multiplied by it too: the reference's
    `ARM(p) * GAP(p)`. The gate is ddakern.ops.channel_attention: its autograd reference, or with
    `fused_ops=True` the fused op.
    """

    def __init__(self, channels: int, *, fused_ops: bool = False) -> None:
        super().__init__(fused_ops=fused_ops)
        self.conv, self.bn = gate_layer(channels, "sigmoid")

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.bn(self.conv(F.adaptive_avg_pool2d(x, 1)))
        if not self.fused_ops:
            return ca_op.reference(x, logits, scale)
        return ca_op.channel_attention(x, logits.to(x.dtype), None if scale is None else scale.to(x.dtype))
