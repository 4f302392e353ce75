"""DDA's mask head fused with the residual: x * (1 + softmax_c(ReLU(BN(Conv1x1(u)))))."""

from __future__ import annotations

import torch
from torch import nn


def bn_momentum(bn: nn.BatchNorm2d) -> float:
    """Advance `num_batches_tracked` and return the momentum nn.BatchNorm2d would use now."""
    if not (bn.training and bn.track_running_stats and bn.num_batches_tracked is not None):
        return 0.0 if bn.momentum is None else bn.momentum
    bn.num_batches_tracked.add_(1)
    if bn.momentum is None:
        return 1.0 / float(bn.num_batches_tracked)
    return bn.momentum


class MaskHead(nn.Module):
    """Turns the upsampled fusion map u into the mask m and applies x * (1 + m).

    `fused=True` runs BN, ReLU, channel softmax, gating and residual as one op
    (`ddakern.functional.attention_residual`).
    """

    def __init__(self, channels: int, *, fused: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.fused = fused
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def mask(self, u: torch.Tensor) -> torch.Tensor:
        """The attention mask m alone (per pixel it sums to 1 over channels)."""
        return torch.softmax(torch.relu(self.bn(self.conv(u))), dim=1)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if not self.fused:
            return x * (1 + self.mask(u))
        from ddakern.functional import attention_residual

        bn = self.bn
        use_batch_stats = bn.training or not bn.track_running_stats
        return attention_residual(
            x,
            self.conv(u).to(x.dtype),
            bn.weight,
            bn.bias,
            bn.running_mean if bn.track_running_stats else None,
            bn.running_var if bn.track_running_stats else None,
            training=use_batch_stats,
            momentum=bn_momentum(bn),
            eps=bn.eps,
        )
