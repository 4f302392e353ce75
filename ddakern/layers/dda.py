"""The Dual-Domain Attention block: `x -> x * (1 + m)` after ResNet stage 1, 2, 3 or 4."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ddakern import recompute as _recompute
from ddakern.layers.blocks import ConvBN, Size2, Upsampler
from ddakern.layers.channel_attention import ChannelAttention
from ddakern.layers.context_path import ContextPath
from ddakern.layers.dual_domain_fusion import DualDomainFusion
from ddakern.layers.fused import FusedOpLayer
from ddakern.layers.mask_head import MaskHead

CONTEXT_P1, CONTEXT_P2 = 256, 512
"""Widths of ResNet-18's layer3 (p1) and layer4 (p2) outputs in the context path."""


def default_width(in_channels: int, stage: int) -> int:
    """The reference's upsampler width: 612 for a ResNet-50 host (4x bottleneck widths), else 512."""
    return 612 if in_channels == 256 * 2 ** (stage - 1) else 512


def halving_chain(size: Size2, steps: int) -> list[Size2]:
    """Sizes after each stride-2, padding-1, 3x3 convolution: [size, ceil(size/2), ...]."""
    sizes = [size]
    for _ in range(steps):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


class DDA(_recompute.Recomputable):
    """Dual-Domain Attention for the host map after ResNet stage `stage` (1..4).

    Spatial path: `4 - stage` stride-2 ConvBNs (width `spatial_width`). Context path: adapters and
    ResNet-18 stages with channel attention. Both are fused, upsampled back (width `width`) and
    turned into a mask m by the mask head; the block returns `x * (1 + m)`.
    Parameter names follow the reference implementation except the mask head (`head.conv`,
    `head.bn` for the reference's `outconv`, `bn`); see `ddakern.models.original`.
    Works at any input size; at sizes where the reference works it computes the same thing.
    `recompute=True` keeps of the block's activations only its costly convolutions' outputs (and x,
    which the host keeps anyway) and runs the rest again in backward (`ddakern.recompute`: exact,
    batch-norm statistics updated once per step).
    """

    def __init__(
        self,
        in_channels: int,
        stage: int,
        *,
        width: int | None = None,
        spatial_width: int = 512,
        fused_ops: bool = False,
        recompute: bool = False,
    ) -> None:
        super().__init__()
        if stage not in (1, 2, 3, 4):
            raise ValueError(f"DDA stage must be 1, 2, 3 or 4, got {stage!r}")
        if in_channels < 1:
            raise ValueError(f"DDA in_channels must be positive, got {in_channels}")
        self.in_channels = in_channels
        self.stage = stage
        self.width = default_width(in_channels, stage) if width is None else width
        self.n_spatial = 4 - stage
        c, sw, w = in_channels, spatial_width, self.width
        for i in range(self.n_spatial):
            setattr(self, f"conv{i + 1}", ConvBN(c if i == 0 else sw, sw, stride=2))
        self.layers = ContextPath(c, entry=stage)
        if stage == 4:
            self.arm1 = ChannelAttention(CONTEXT_P2)
            self.up1 = Upsampler(CONTEXT_P2, CONTEXT_P2, kernel_size=3, stride=2, padding=1)
            self.ffm = DualDomainFusion(c + CONTEXT_P2, c)
        else:
            self.arm1 = ChannelAttention(CONTEXT_P1)
            self.arm2 = ChannelAttention(CONTEXT_P2)
            if stage == 1:
                self.pool = nn.MaxPool2d(2, ceil_mode=True)
            else:
                self.up_arm2 = Upsampler(CONTEXT_P2, CONTEXT_P2, kernel_size=3, stride=2, padding=1)
            self.ffm = DualDomainFusion(sw + CONTEXT_P1 + CONTEXT_P2, c)
            self.up2 = Upsampler(c, c, hidden=[w] * (self.n_spatial - 1))
        self.head = MaskHead(c)
        self.fused_ops = fused_ops
        self.recompute = recompute

    @property
    def fused_ops(self) -> bool:
        """Whether the gates and the mask head run through the fused ops (else their autograd references)."""
        return self.head.fused_ops

    @fused_ops.setter
    def fused_ops(self, value: bool) -> None:
        for m in self.modules():
            if isinstance(m, FusedOpLayer):
                m.fused_ops = bool(value)

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"DDA{self.stage} expects an N x {self.in_channels} x H x W map, got {tuple(x.shape)}")

    def fusion_map(self, x: torch.Tensor) -> torch.Tensor:
        """The fused dual-domain map, upsampled back to x's size (the mask head's input u)."""
        self.check_input(x)
        size: Size2 = (x.shape[-2], x.shape[-1])
        context = self.layers(x)
        p2 = context[-1]
        g = F.adaptive_avg_pool2d(p2, 1)
        if self.stage == 4:
            c1 = self.up1(self.arm1(p2, scale=g), sizes=[size])
            return self.ffm(x, c1)
        sizes = halving_chain(size, self.n_spatial)
        s = x
        for i in range(self.n_spatial):
            s = getattr(self, f"conv{i + 1}")(s)
        c1 = self.arm1(context[-2])
        c2 = self.arm2(p2, scale=g)
        if self.stage == 1:
            c1 = self.pool(c1)
        else:
            c2 = self.up_arm2(c2, sizes=[sizes[-1]])
        f = self.ffm(s, c1, c2)
        return self.up2(f, sizes=sizes[-2::-1])

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """The attention mask m (same shape as x)."""
        return self.head.mask(self.fusion_map(x))

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """x * (1 + m), every activation kept (what forward recomputes)."""
        return self.head(x, self.fusion_map(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.recompute and _recompute.wanted():
            return _recompute.checkpoint(self, self.attend, x, keep="costly-convolutions")
        return self.attend(x)

    def extra_repr(self) -> str:
        extra = ", recompute=True" if self.recompute else ""
        return f"in_channels={self.in_channels}, stage={self.stage}, width={self.width}{extra}"
