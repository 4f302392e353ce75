"""Convolution blocks of DDA: conv-BN-ReLU and the transposed-convolution upsampler."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

Size2 = tuple[int, int]


def init_conv_bn(module: nn.Module, nonlinearity: str = "relu") -> None:
    """Kaiming fan-out init for (transposed) convolutions, unit BN: the reference's init."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity=nonlinearity)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ConvBN(nn.Module):
    """Conv3x3 (no bias) -> BN -> ReLU; stride 2 in the spatial path, 1 in the fusion block."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.batch_norm = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.batch_norm(self.conv1(x)))


class UpBlock(nn.Sequential):
    """ConvTranspose (no bias) -> BN -> ReLU that lands on a requested size where it can.

    The stride-2 transposed convolution reaches `size` exactly whenever the needed
    output_padding is valid; otherwise it returns its natural size and the caller resizes.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 2, stride: int = 2, padding: int = 0
    ) -> None:
        super().__init__(
            nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def reachable_size(self, in_size: Size2, size: Size2 | None) -> list[int]:
        """The output size closest to `size` this layer can produce from `in_size`."""
        conv: nn.ConvTranspose2d = self[0]  # type: ignore[assignment]
        out = []
        for i in range(2):
            k, s, p = conv.kernel_size[i], conv.stride[i], conv.padding[i]
            natural = (in_size[i] - 1) * s - 2 * p + k
            want = natural if size is None else size[i]
            out.append(want if 0 <= want - natural < s else natural)
        return out

    def forward(self, x: torch.Tensor, size: Size2 | None = None) -> torch.Tensor:  # type: ignore[override]
        conv, bn, relu = self[0], self[1], self[2]
        if size is None:
            y = conv(x)
        else:
            y = conv(x, output_size=self.reachable_size((x.shape[-2], x.shape[-1]), size))
        return relu(bn(y))


class Upsampler(nn.Module):
    """A chain of UpBlocks: `hidden` widths in `uplayers`, then `upout` back to `out_channels`.

    Keys follow the reference (`uplayers.{i}.{0,1}`, `upout.{0,1}`); `uplayers` is absent when
    there are no hidden widths, as in the reference.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: Sequence[int] = (),
        kernel_size: int = 2,
        stride: int = 2,
        padding: int = 0,
    ) -> None:
        super().__init__()
        widths = [in_channels, *hidden]
        if hidden:
            self.uplayers = nn.Sequential(
                *(UpBlock(a, b, kernel_size, stride, padding) for a, b in zip(widths[:-1], widths[1:]))
            )
        self.upout = UpBlock(widths[-1], out_channels, kernel_size, stride, padding)
        init_conv_bn(self)

    @property
    def steps(self) -> int:
        return len(self.uplayers) + 1 if hasattr(self, "uplayers") else 1

    def forward(self, x: torch.Tensor, sizes: Sequence[Size2] | None = None) -> torch.Tensor:
        """Upsample through each step; `sizes` gives the target of every step (last = final)."""
        blocks = [*self.uplayers, self.upout] if hasattr(self, "uplayers") else [self.upout]
        for i, block in enumerate(blocks):
            x = block(x, None if sizes is None else sizes[i])
        if sizes is not None and tuple(x.shape[-2:]) != tuple(sizes[-1]):
            x = F.interpolate(x, size=tuple(sizes[-1]), mode="bilinear", align_corners=False)
        return x
