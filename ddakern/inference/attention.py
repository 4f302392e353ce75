"""DDA attention overlays: each DDA block's mask m, summarised per pixel, over the face; Grad-CAM too.

DDA computes `x * (1 + m)` with `m = softmax_c(ReLU(BN(conv(u))))`: a softmax over channels, so m
summed over channels is 1 at every pixel and shows nothing. The overlays therefore summarise m per
pixel as (`how`):
- "focus" (default): 1 - H(m) / log C, the normalised negative entropy over channels: 1 where the
  mask puts all its weight on few channels (DDA singles the position out), 0 where it is uniform.
- "entropy": H(m) / log C, the complement.
- "gain": sum_c m_c |x_c|, the magnitude DDA adds at each position (mask times the host features).
Grad-CAM (Selvaraju et al. 2017) of the top class on the last stage's output is added for every
model, and is the only map for hosts without DDA. Works for registry models, `ddakern.attach`-ed
torchvision ResNets and fusion modules (their first member's blocks). Hooks only; no layer is changed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from ddakern.layers.dda import DDA

SUMMARIES = ("focus", "entropy", "gain")


def dda_blocks(model: nn.Module) -> list[tuple[str, DDA]]:
    """(name, block) of every DDA block in the model, in stage order."""
    return sorted(((n, m) for n, m in model.named_modules() if isinstance(m, DDA)), key=lambda t: (t[1].stage, t[0]))


def summarise(m: torch.Tensor, x: torch.Tensor, how: str = "focus") -> torch.Tensor:
    """N x H x W per-pixel summary of a mask m (N x C x H x W) on host map x (see the module docstring)."""
    if how == "gain":
        return (m * x.abs()).sum(1)
    h = -(m * m.clamp_min(1e-12).log()).sum(1) / math.log(m.shape[1])
    if how == "entropy":
        return h
    if how == "focus":
        return 1.0 - h
    raise ValueError(f"unknown attention summary {how!r} (choose {', '.join(SUMMARIES)})")


@contextmanager
def record_masks(model: nn.Module, how: str = "focus") -> Iterator[dict[str, torch.Tensor]]:
    """While active, every forward fills {block name: N x H x W summary of its mask}."""
    found: dict[str, torch.Tensor] = {}
    handles = []
    for name, block in dda_blocks(model):

        def hook(head: nn.Module, args: tuple, output: torch.Tensor, name: str = name) -> None:
            x, u = args
            with torch.no_grad():
                found[name] = summarise(head.mask(u).float(), x.float(), how).cpu()

        handles.append(block.head.register_forward_hook(hook))
    try:
        yield found
    finally:
        for h in handles:
            h.remove()


def last_stage(model: nn.Module) -> nn.Module:
    """The module whose output is the last stage's map: dda4 / layer4 (ResNets), features (VGG),
    the first member's for fusion modules, else the last convolution."""
    if hasattr(model, "member1"):
        return last_stage(model.member1)
    for name in ("dda4", "layer4", "features"):
        m = getattr(model, name, None)
        if isinstance(m, nn.Module):
            return m
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no convolution for Grad-CAM")
    return convs[-1]


def grad_cam(model: nn.Module, x: torch.Tensor, layer: nn.Module, class_index: int | None = None) -> torch.Tensor:
    """Grad-CAM of one image (1 x 3 x S x S) on `layer`'s output: ReLU(sum_k mean(dy/dA_k) A_k), h x w."""
    store: dict[str, torch.Tensor] = {}

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        output.retain_grad()
        store["a"] = output

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(x)
            k = int(logits[0].argmax()) if class_index is None else class_index
            model.zero_grad(set_to_none=True)
            logits[0, k].backward()
    finally:
        handle.remove()
    a = store["a"]
    weights = a.grad.mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * a).sum(1))[0].detach().float().cpu()


def attention_maps(model: nn.Module, x: torch.Tensor, how: str = "focus") -> list[tuple[str, np.ndarray]]:
    """(title, h x w map) per DDA block (stage order) and Grad-CAM, for one preprocessed face."""
    model.eval()
    with record_masks(model, how) as masks:
        try:
            cam = grad_cam(model, x, last_stage(model))
        except RuntimeError:  # no gradient path (late fusion runs its members without gradients)
            cam = None
            with torch.no_grad():
                model(x)
    blocks = dict(dda_blocks(model))
    out = []
    for name, m in masks.items():
        stage = blocks[name].stage
        out.append((f"DDA stage {stage} {how} ({m.shape[-2]}x{m.shape[-1]})", m[0].numpy()))
    if cam is not None:
        out.append((f"Grad-CAM, last stage ({cam.shape[0]}x{cam.shape[1]})", cam.numpy()))
    return out
