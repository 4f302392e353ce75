"""DDA's context path: two adapters into the ResNet-18 stages from the entry stage on."""

from __future__ import annotations

import torch
from torch import nn

from ddakern.layers.resnet_blocks import RESNET18_STAGE, BasicBlock, init_resnet, make_stage

ADAPTER_WIDTHS = {1: (64, 64), 2: (128, 64), 3: (256, 128), 4: (512, 256)}
"""Stage k: (a1, a2) of the adapters Conv3x3(c->a1)-BN-ReLU-Conv3x3(a1->a2)-BN-ReLU."""


class ContextPath(nn.Module):
    """Adapters + ResNet-18 `layer{entry}`..`layer4`; returns every stage output in order.

    Only the stages that run are registered (the reference also registers the ResNet-18
    stem, classifier and skipped stages, which its forward never uses).
    """

    def __init__(self, in_channels: int, entry: int) -> None:
        super().__init__()
        a1, a2 = ADAPTER_WIDTHS[entry]
        self.entry = entry
        self.conv = nn.Conv2d(in_channels, a1, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(a1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(a1, a2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(a2)
        self.relu2 = nn.ReLU(inplace=True)
        for k in range(entry, 5):
            inplanes, planes, stride = RESNET18_STAGE[k]
            setattr(self, f"layer{k}", make_stage(BasicBlock, inplanes, planes, 2, stride))
        init_resnet(self)

    @property
    def stage_names(self) -> list[str]:
        return [f"layer{k}" for k in range(self.entry, 5)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn(self.conv(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        outs = []
        for name in self.stage_names:
            x = getattr(self, name)(x)
            outs.append(x)
        return outs
