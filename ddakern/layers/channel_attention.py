"""Channel attention ("multi-level attention", ARM): x * softmax_c(BN(Conv1x1(GAP(x))))."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelAttention(nn.Module):
    """Gates each channel of x by a softmax over channels of its pooled descriptor.

    With `scale` (N x C x 1 x 1) the gated map is multiplied by it too: the reference's
    `ARM(p) * GAP(p)`. `fused=True` runs the gate through `ddakern.functional.channel_attention`.
    """

    def __init__(self, channels: int, *, fused: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.fused = fused
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="sigmoid")
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.bn(self.conv(F.adaptive_avg_pool2d(x, 1)))
        if self.fused:
            from ddakern.functional import channel_attention

            return channel_attention(x, logits.to(x.dtype), scale=None if scale is None else scale.to(x.dtype))
        out = torch.mul(x, torch.softmax(logits, dim=1))
        return out if scale is None else torch.mul(out, scale)
