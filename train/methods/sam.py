"""SAM and ASAM (sharpness-aware minimisation, pytorch-optimizer's `SAM`) as one update of the engine.

An update is: gradients at w (pass 1, all micro-batches), a step to w + e(w) (`SAM.first_step`), gradients
there (pass 2, the same micro-batches, batch-norm running statistics frozen so they move once per update,
as the SAM papers do), back to w, and the base optimiser's step with the pass-2 gradients.

AMP: with fp16 the GradScaler unscales pass 1 against the SAM object and pass 2 against the base optimiser
(two optimiser states, so neither is unscaled twice), and `scaler.step(base)` skips the update when pass 2
overflowed -- which an overflow in pass 1 also causes: its inf gradients make e(w) NaN, so pass 2 is NaN.
The restore to w happens whether or not the step is skipped. Under DDP each pass's backward all-reduces.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from . import need

__all__ = ["frozen_bn_stats", "make_sam", "restore_weights"]


def make_sam(kind: str, rho: float, params: Any, base: type[torch.optim.Optimizer], **kw: Any) -> Any:
    """pytorch-optimizer's SAM around `base(params, **kw)`; kind "asam" is its adaptive variant. The base
    optimiser is `.base_optimizer` (the engine steps it and schedules it)."""
    po = need("pytorch_optimizer", "--sam")
    return po.SAM(params, base, rho=rho, adaptive=kind == "asam", **kw)


@torch.no_grad()
def restore_weights(sam: Any) -> None:
    """Put back the weights `first_step` saved (the restore half of `SAM.second_step`, whose other half --
    the base step -- the GradScaler must be able to skip)."""
    for group in sam.param_groups:
        for p in group["params"]:
            old = sam.state[p].pop("old_p", None)
            if old is not None:
                p.copy_(old)


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """Batch norm keeps its running statistics (pytorch-optimizer's disable/enable_running_stats: momentum
    0) and its batch counter (restored here: momentum 0 still counts the batch) through the block."""
    po = need("pytorch_optimizer", "--sam")
    counters = [
        (m, m.num_batches_tracked.clone())
        for m in model.modules()
        if isinstance(m, _BatchNorm) and m.num_batches_tracked is not None
    ]
    po.disable_running_stats(model)
    try:
        yield
    finally:
        po.enable_running_stats(model)
        for m, n in counters:
            m.num_batches_tracked.copy_(n)
