"""VGG with batch norm, torchvision's parameter names, any input size of 32 px or more."""

from __future__ import annotations

import torch
from torch import nn

from ddakern import recompute

VGG_LAYOUT: dict[str, list[int | str]] = {
    "vgg11_bn": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13_bn": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
}


class VGG(nn.Module):
    """torchvision's VGG-BN: `features`, 7x7 adaptive pool, 3-layer `classifier`."""

    def __init__(self, layout: list[int | str], num_classes: int = 7, dropout: float = 0.4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in layout:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [
                    nn.Conv2d(cin, int(v), 3, padding=1),
                    nn.BatchNorm2d(int(v)),
                    nn.ReLU(inplace=True),
                ]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.num_features = 4096
        self.recompute = "none"
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def set_grad_checkpointing(self, mode: str | bool = True) -> None:
        """Recompute mode: "all" (or True) recomputes each pooling-delimited block; "dda" keeps only the
        convolution outputs of each block (its batch norms, ReLUs and pooling run again in backward);
        "none" keeps everything."""
        self.recompute = recompute.parse_mode(mode)

    def blocks(self) -> list[nn.Sequential]:
        """`features` cut after each max pool: the segments "all" recomputes."""
        cuts = [i + 1 for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        starts = [0, *cuts[:-1]]
        return [self.features[a:b] for a, b in zip(starts, cuts)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N x 4096), before the last dropout and linear layer."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an N x 3 x H x W image batch, got shape {tuple(x.shape)}")
        if self.recompute in ("dda", "all") and recompute.wanted():
            for block in self.blocks():
                x = recompute.checkpoint(block, block, x, keep="convolutions" if self.recompute == "dda" else "nothing")
        else:
            x = self.features(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier[:5](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier[5:](self.forward_features(x))


def build_vgg(name: str, num_classes: int = 7, dropout: float = 0.4) -> VGG:
    return VGG(VGG_LAYOUT[name], num_classes=num_classes, dropout=dropout)
