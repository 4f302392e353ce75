"""The exponential moving average of the weights (timm's ModelEmaV3), kept beside the raw weights.

The engine updates it after every optimiser update, evaluates it each epoch beside the raw weights, lets
selection pick either, and checkpoints it (state-dict keys as the model's, so the selected EMA weights load
into the model itself).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from . import need

__all__ = ["WeightEMA"]


class WeightEMA:
    """ModelEmaV3 of `net` with `decay` (buffers averaged too, timm's default)."""

    def __init__(self, net: nn.Module, decay: float) -> None:
        timm_utils = need("timm.utils", "--ema")
        self.ema = timm_utils.ModelEmaV3(net, decay=decay)
        self.ema.module.eval()

    @property
    def module(self) -> nn.Module:
        """The averaged model (evaluate it; never train it)."""
        return self.ema.module

    def update(self, net: nn.Module) -> None:
        self.ema.update(net)

    def reset(self, net: nn.Module) -> None:
        """Start the average again from `net`'s weights (a resume from a checkpoint without an EMA)."""
        self.ema.set(net)

    def state_dict(self) -> dict[str, Any]:
        return self.ema.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema.module.load_state_dict(state)
