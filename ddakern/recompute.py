"""Exact activation recomputation: `torch.utils.checkpoint` without the second batch-norm update.

Plain checkpointing runs a region's forward twice per step, so every training-mode BatchNorm in it
would advance its running statistics (and `num_batches_tracked`) twice. `checkpoint` here runs the
recomputation with those batch norms updating scratch copies of their statistics (the same ops and
outputs, bit for bit), so the real ones are updated exactly once per step, as without recomputation.
RNG state and autocast are preserved by torch.utils.checkpoint itself (non-reentrant variant, which
also works with DDP and torch.compile).

Modes of a model (`set_recompute` / `model.set_grad_checkpointing(mode)`):
- "none": keep every activation (the default).
- "dda": recompute DDA's attention branches (their one input, the block's x, is kept by the host).
- "all": recompute the host stages too; only stage boundaries are kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

from ddakern import profiling

MODES = ("none", "dda", "all")


def parse_mode(mode: str | bool | None) -> str:
    """A recompute mode from a name, or timm's bool (True = "all", False/None = "none")."""
    if mode is None or mode is False:
        return "none"
    if mode is True:
        return "all"
    if mode not in MODES:
        raise ValueError(f"recompute mode must be one of {', '.join(MODES)}, got {mode!r}")
    return str(mode)


@contextlib.contextmanager
def scratch_bn_stats(module: nn.Module) -> Iterator[None]:
    """Training-mode batch norms in `module` update scratch copies of their running statistics.

    Everything else stays as in the first forward (same ops, same saved tensors, so checkpoint's
    recomputation check holds); the real running_mean, running_var and num_batches_tracked are put
    back untouched on exit, also when the recomputation stops early.
    """
    names = ("running_mean", "running_var", "num_batches_tracked")
    switched = [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
    ]
    originals = [[getattr(m, n) for n in names] for m in switched]
    for m, bufs in zip(switched, originals):
        for n, b in zip(names, bufs):
            if b is not None:
                setattr(m, n, b.clone())
    try:
        yield
    finally:
        for m, bufs in zip(switched, originals):
            for n, b in zip(names, bufs):
                setattr(m, n, b)


def _contexts(module: nn.Module) -> Callable[[], tuple[Any, Any]]:
    return lambda: (contextlib.nullcontext(), scratch_bn_stats(module))


def wanted() -> bool:
    """Whether recomputing pays off now: only when autograd records a graph."""
    return torch.is_grad_enabled()


def checkpoint(module: nn.Module, fn: Callable[..., Any], *args: torch.Tensor) -> Any:
    """fn(*args) without keeping its intermediate activations; recomputed in backward, exactly.

    `module` holds the batch norms that `fn` runs. Under torch.compile the compiler's own
    recomputation (which replays no buffer update) handles the region.
    """
    profiling.note_kept(*args)
    if torch.compiler.is_compiling():
        return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)
    return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False, context_fn=_contexts(module))


def set_recompute(model: nn.Module, mode: str | bool | None) -> nn.Module:
    """Set the recompute mode of `model`: its own `set_grad_checkpointing`, else its DDA blocks.

    Models without `set_grad_checkpointing` (e.g. a torchvision ResNet with `ddakern.attach`)
    support "none" and "dda". Returns the model.
    """
    mode = parse_mode(mode)
    setter = getattr(model, "set_grad_checkpointing", None)
    if callable(setter):
        setter(mode)
        return model
    if mode == "all":
        raise ValueError(
            f"recompute 'all' needs a model with set_grad_checkpointing; {type(model).__name__} has none (use 'dda')"
        )
    from ddakern.layers.dda import DDA

    for m in model.modules():
        if isinstance(m, DDA):
            m.recompute = mode == "dda"
    return model
