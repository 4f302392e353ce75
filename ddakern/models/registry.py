"""Model registry: `create(name, ...)` and `list_models()` for plain and DDA hosts."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from ddakern.models.attach import attach, parse_stages
from ddakern.models.resnet import build_resnet
from ddakern.models.vgg import build_vgg
from ddakern.models.weights import (
    WeightsError,
    imagenet_state_dict,
    load_context_weights,
    load_host_weights,
    read_state_dict,
    vggface2_state_dict,
)
from ddakern.recompute import set_recompute

_REGISTRY: dict[str, tuple[Callable[..., nn.Module], str, bool]] = {}


def register_model(name: str, builder: Callable[..., nn.Module], host: str, dda: bool) -> None:
    """Register `name`: `builder(num_classes=, dropout=)` builds the host `host`; `dda` adds DDA blocks."""
    _REGISTRY[name] = (builder, host, dda)


for _host in ("resnet18", "resnet34", "resnet50", "resnet101"):
    register_model(_host, lambda h=_host, **kw: build_resnet(h, **kw), _host, dda=False)
    register_model(f"{_host}_dda", lambda h=_host, **kw: build_resnet(h, **kw), _host, dda=True)
for _host in ("vgg11_bn", "vgg13_bn"):
    register_model(_host, lambda h=_host, **kw: build_vgg(h, **kw), _host, dda=False)


def list_models() -> list[str]:
    """Names `create` accepts."""
    return sorted(_REGISTRY)


def load_pretrained(model: nn.Module, host: str, pretrained: str | os.PathLike) -> None:
    """ "imagenet", "vggface2" or a file path: host weights, plus ImageNet ResNet-18 context paths."""
    if pretrained == "imagenet":
        load_host_weights(model, imagenet_state_dict(host), f"ImageNet {host}")
    elif pretrained == "vggface2":
        if host != "resnet50":
            raise WeightsError(f"VGGFace2 weights exist for resnet50 only, not {host}")
        load_host_weights(model, vggface2_state_dict(), "VGGFace2 ResNet-50")
    else:
        load_host_weights(model, read_state_dict(pretrained), str(pretrained))
    if any(getattr(model, f"dda{k}", None) is not None for k in range(1, 5)):
        load_context_weights(model, imagenet_state_dict("resnet18"))


def create(
    name: str,
    num_classes: int = 7,
    pretrained: str | os.PathLike | None = None,
    dda_stages: Iterable[int] = (1, 2, 3, 4),
    dropout: float = 0.4,
    fused_ops: bool = False,
    recompute: str | bool = "none",
    **dda_options: Any,
) -> nn.Module:
    """Build a registered model.

    `pretrained`: None, "imagenet", "vggface2" (resnet50 hosts) or a state-dict file for the host.
    DDA variants (`*_dda`) get a DDA block after each stage in `dda_stages` (any subset, for the
    stage ablation); `dda_options` (width, spatial_width) go to every block; `fused_ops`
    routes their gates and mask heads through the fused ops. `recompute` ("none", "dda", "all"; see
    ddakern.recompute) trades backward-time recomputation for activation memory.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    builder, host, dda = _REGISTRY[name]
    model = builder(num_classes=num_classes, dropout=dropout)
    if dda:
        stages = parse_stages(dda_stages)
        attach(model, stages, fused_ops=fused_ops, **dda_options)
    elif dda_options:
        raise ValueError(f"{name} has no DDA blocks; unexpected options {sorted(dda_options)}")
    if pretrained is not None:
        load_pretrained(model, host, pretrained)
    set_recompute(model, recompute)
    model.name = name  # type: ignore[assignment]
    return model
