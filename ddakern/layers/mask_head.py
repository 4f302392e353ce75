"""DDA's mask head fused with the residual: x * (1 + softmax_c(ReLU(BN(Conv1x1(u)))))."""

from __future__ import annotations

import torch
from torch import nn

from ddakern.layers.fused import FusedOpLayer
from ddakern.ops import attention_residual as ar_op
from ddakern.ops import sync_bn


def bn_momentum(bn: nn.BatchNorm2d) -> float:
    """Advance `num_batches_tracked` and return the momentum nn.BatchNorm2d would use now."""
    if not (bn.training and bn.track_running_stats and bn.num_batches_tracked is not None):
        return 0.0 if bn.momentum is None else bn.momentum
    bn.num_batches_tracked.add_(1)
    if bn.momentum is None:
        return 1.0 / float(bn.num_batches_tracked)
    return bn.momentum


def gate_layer(channels: int, nonlinearity: str) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """The 1x1 convolution (Kaiming fan-out init) and the batch norm (weight 1, bias 0) of a DDA gate."""
    conv = nn.Conv2d(channels, channels, 1, bias=False)
    bn = nn.BatchNorm2d(channels)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity=nonlinearity)
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    return conv, bn


class MaskHead(FusedOpLayer):
    """Turns the upsampled fusion map u into the mask m and applies x * (1 + m).

    The math is ddakern.ops.attention_residual: its autograd reference, or with `fused_ops=True` the
    fused op (BN, ReLU, channel softmax, gating and residual as one op, backend ddakern.use_ops_backend).
    The op reads `bn`'s parameters and never calls it, so after nn.SyncBatchNorm.convert_sync_batchnorm
    it is handed the converted module's process group: its batch statistics then span every rank's
    batch, as the converted modules' do (ddakern.ops.sync_bn).
    """

    def __init__(self, channels: int, *, fused_ops: bool = False) -> None:
        super().__init__(fused_ops=fused_ops)
        self.conv, self.bn = gate_layer(channels, "relu")

    def _batch_norm(self) -> tuple:
        """The op's batch-norm arguments from `bn` (weight, bias, running stats, training, momentum, eps,
        process group), as nn.BatchNorm2d / nn.SyncBatchNorm would use them now."""
        bn = self.bn
        running = (bn.running_mean, bn.running_var) if bn.track_running_stats else (None, None)
        training = bn.training or not bn.track_running_stats
        return (bn.weight, bn.bias, *running, training, bn_momentum(bn), bn.eps, sync_bn.group_of(bn))

    def mask(self, u: torch.Tensor) -> torch.Tensor:
        """The attention mask m alone (per pixel it sums to 1 over channels): the op's reference mask."""
        return ar_op.mask(self.conv(u), *self._batch_norm())

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        logits = self.conv(u)
        if not self.fused_ops:
            return ar_op.reference(x, logits, *self._batch_norm())
        return ar_op.attention_residual(x, logits.to(x.dtype), *self._batch_norm())
