"""ResNet hosts with torchvision's parameter names and optional DDA after each stage."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ddakern import recompute
from ddakern.layers.dda import DDA
from ddakern.layers.resnet_blocks import BasicBlock, Bottleneck, init_resnet, make_stage

RESNET_LAYOUT = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(nn.Module):
    """torchvision-compatible ResNet whose classifier is Dropout -> Linear (`fc`).

    `dda1`..`dda4` hold the DDA block applied after `layer1`..`layer4` (None where absent), so
    torchvision state dicts load unchanged and DDA keys live beside them.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, ...],
        num_classes: int = 7,
        dropout: float = 0.4,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for k, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            setattr(self, f"layer{k}", make_stage(block, inplanes, planes, blocks, 1 if k == 1 else 2))
            inplanes = planes * block.expansion
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.num_features = inplanes
        self.fc = nn.Linear(inplanes, num_classes)
        self.dda1: DDA | None = None
        self.dda2: DDA | None = None
        self.dda3: DDA | None = None
        self.dda4: DDA | None = None
        self.recompute = "none"
        init_resnet(self)

    def set_grad_checkpointing(self, mode: str | bool = True) -> None:
        """Recompute mode (timm's name): "none", "dda" or "all" (every stage; True).

        "dda" recomputes the DDA branches (except their costly convolutions) and keeps only the host's
        convolution outputs (stem + layer1, then each layerK, is a selective region: its batch norms,
        ReLUs, max pool and residual adds run again in backward). "all" keeps only the stage
        boundaries: stem + layer1 (+ dda1), then layerK (+ ddaK).
        """
        mode = recompute.parse_mode(mode)
        self.recompute = mode
        for k in range(1, 5):
            dda = getattr(self, f"dda{k}")
            if dda is not None:
                dda.recompute = mode == "dda"

    def host_stage(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """layerK (stage 1 starts with the stem)."""
        if k == 1:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return getattr(self, f"layer{k}")(x)

    def stage(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """Stage k: layerK then ddaK."""
        if self.recompute == "dda" and recompute.wanted():
            x = recompute.checkpoint(self, partial(self.host_stage, k), x, keep="convolutions")
        else:
            x = self.host_stage(k, x)
        dda = getattr(self, f"dda{k}")
        return x if dda is None else dda(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (N x num_features), before dropout and the classifier."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an N x 3 x H x W image batch, got shape {tuple(x.shape)}")
        whole = self.recompute == "all" and recompute.wanted()
        for k in range(1, 5):
            x = recompute.checkpoint(self, partial(self.stage, k), x) if whole else self.stage(k, x)
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.forward_features(x)))


def build_resnet(name: str, num_classes: int = 7, dropout: float = 0.4) -> ResNet:
    block, layers = RESNET_LAYOUT[name]
    return ResNet(block, layers, num_classes=num_classes, dropout=dropout)
