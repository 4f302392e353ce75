"""What happens to a training batch before the model sees it, and the loss that fits: RandomErasing and
mixup/cutmix (timm), label smoothing (torch's cross entropy, or folded into mixup's soft targets as timm
does), with timm's SoftTargetCrossEntropy for soft targets.

RandomErasing runs on the batch, on its device, after normalisation (as the FER repositories' torchvision
`RandomErasing` after `Normalize`, zero fill): one implementation for the PyTorch and the DALI pipelines.
timm's draws from Python's `random`, and Mixup from NumPy's global generator, both of which checkpoints
save, so an interrupted run resumes bitwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import Config
from . import need

__all__ = ["BatchMixing"]


class BatchMixing:
    """`prepare(x, y)` -> (x, target) for training; `loss(logits, target, weight)`."""

    def __init__(self, cfg: Config, num_classes: int, device: torch.device) -> None:
        self.label_smoothing = cfg.label_smoothing
        self.erase = self.mix = None
        if cfg.random_erasing > 0:
            re = need("timm.data.random_erasing", "--random-erasing")
            self.erase = re.RandomErasing(
                probability=cfg.random_erasing,
                min_area=cfg.erasing_min_area,
                max_area=cfg.erasing_max_area,
                mode="const",
                device=device,
            )
        if cfg.mixup > 0 or cfg.cutmix > 0:
            timm_data = need("timm.data", "--mixup/--cutmix")
            self.mix = timm_data.Mixup(
                mixup_alpha=cfg.mixup,
                cutmix_alpha=cfg.cutmix,
                label_smoothing=cfg.label_smoothing,
                num_classes=num_classes,
            )
            self.soft_loss = need("timm.loss", "--mixup/--cutmix").SoftTargetCrossEntropy()

    @property
    def active(self) -> bool:
        return self.erase is not None or self.mix is not None

    def prepare(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Erase, then mix (in place, on the batch's device); the target is soft when mixing."""
        if self.erase is not None:
            x = self.erase(x)
        if self.mix is not None:
            return self.mix(x, y)
        return x, y

    def loss(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        """Cross entropy against class indices (with label smoothing) or timm's soft-target cross entropy."""
        if target.dim() == 2:
            return self.soft_loss(logits, target)
        return F.cross_entropy(logits, target, weight=weight, label_smoothing=self.label_smoothing)
