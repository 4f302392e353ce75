"""Dual-domain fusion: ConvBN over the concatenated paths, then a residual channel gate."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ddakern.layers.blocks import ConvBN
from ddakern.layers.fused import FusedOpLayer
from ddakern.ops import channel_attention as ca_op


class DualDomainFusion(FusedOpLayer):
    """f = ConvBN(concat(inputs)); w = softmax_c(BN2(Conv(ReLU(BN1(Conv(GAP(f))))))); f + f * w.

    The gate is ddakern.ops.channel_attention (residual): its autograd reference, or with
    `fused_ops=True` the fused op.
    """

    def __init__(self, in_channels: int, out_channels: int, *, fused_ops: bool = False) -> None:
        super().__init__(fused_ops=fused_ops)
        self.in_channels = in_channels
        self.conv_block = ConvBN(in_channels, out_channels, stride=1)
        self.conv1 = nn.Conv2d(out_channels, out_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        nn.init.kaiming_normal_(self.conv2.weight, mode="fan_out", nonlinearity="sigmoid")
        for bn in (self.bn1, self.bn2):
            nn.init.ones_(bn.weight)
            nn.init.zeros_(bn.bias)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        x = torch.cat(inputs, dim=1)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"DualDomainFusion expects {self.in_channels} concatenated channels, got {x.shape[1]}")
        f = self.conv_block(x)
        logits = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(F.adaptive_avg_pool2d(f, 1))))))
        if not self.fused_ops:
            return ca_op.reference(f, logits, residual=True)
        return ca_op.channel_attention(f, logits.to(f.dtype), residual=True)
