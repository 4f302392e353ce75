"""Put DDA blocks after the stages of an existing torchvision-style ResNet, in place."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ddakern.layers.dda import DDA
from ddakern.models.resnet import ResNet


class ApplyDDA:
    """Forward hook on `layerK` that returns `dda(output)`; deep-copies along with its model."""

    def __init__(self, dda: DDA) -> None:
        self.dda = dda

    def __call__(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return self.dda(output)


def stage_channels(model: nn.Module, stage: int) -> int:
    """Output channels of `layer{stage}`: the width of its last block's last batch norm."""
    layer = getattr(model, f"layer{stage}", None)
    if not isinstance(layer, nn.Module):
        raise TypeError(
            f"attach() needs a torchvision-style ResNet with layer1..layer4; "
            f"{type(model).__name__} has no module 'layer{stage}'"
        )
    bns = [m for m in layer.modules() if isinstance(m, nn.BatchNorm2d)]
    blocks = list(layer.children())
    last = blocks[-1] if blocks else None
    for name in ("bn3", "bn2"):
        if isinstance(getattr(last, name, None), nn.BatchNorm2d):
            return getattr(last, name).num_features
    if not bns:
        raise TypeError(f"cannot infer the channels of {type(model).__name__}.layer{stage}: no BatchNorm2d")
    return bns[-1].num_features


def parse_stages(stages: Iterable[int]) -> tuple[int, ...]:
    """Validate a DDA stage selection such as (1, 2, 3, 4) or (3, 4)."""
    out = tuple(sorted(int(s) for s in stages))
    if any(s not in (1, 2, 3, 4) for s in out) or len(set(out)) != len(out):
        raise ValueError(f"DDA stages must be distinct values in 1..4, got {tuple(stages)}")
    return out


def attach(model: nn.Module, stages: Iterable[int] = (1, 2, 3, 4), **dda_options: Any) -> nn.Module:
    """Add `ddaK` = DDA(channels of layerK, K) after each chosen stage of `model`, in place.

    The host's own parameter names stay unchanged (its checkpoints still load); DDA parameters
    appear under `dda1`..`dda4`. Works for ddakern's and torchvision's ResNets at any input size
    of 32 px or more. `dda_options` go to `ddakern.DDA` (width, spatial_width, fused_ops).
    Returns the model for chaining.
    """
    chosen = parse_stages(stages)
    widths = {k: stage_channels(model, k) for k in chosen}
    for k in chosen:
        if isinstance(getattr(model, f"dda{k}", None), DDA):
            raise ValueError(f"{type(model).__name__} already has a DDA block after layer{k}")
    try:
        ref = next(model.parameters())
        factory = {"device": ref.device, "dtype": ref.dtype}
    except StopIteration:
        factory = {}
    for k in chosen:
        dda = DDA(widths[k], k, **dda_options).to(**factory).train(model.training)
        if isinstance(model, ResNet):
            setattr(model, f"dda{k}", dda)
        else:
            model.add_module(f"dda{k}", dda)
            getattr(model, f"layer{k}").register_forward_hook(ApplyDDA(dda))
    return model
