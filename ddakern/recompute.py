"""Exact activation recomputation: `torch.utils.checkpoint` without the second batch-norm update.

Plain checkpointing runs a region's forward twice per step, so every training-mode BatchNorm in it
would advance its running statistics (and `num_batches_tracked`) twice. `checkpoint` here runs the
recomputation with those batch norms updating scratch copies of their statistics (the same ops and
outputs, bit for bit), so the real ones are updated exactly once per step, as without recomputation.
RNG state and autocast are preserved by torch.utils.checkpoint itself (non-reentrant variant, which
also works with DDP and torch.compile).

Modes of a model (`set_recompute` / `model.set_grad_checkpointing(mode)`):
- "none": keep every activation (the default).
- "dda": recompute DDA's attention branches (their one input, the block's x, is kept), and let the
  host keep only its convolution outputs: its batch norms, ReLUs, poolings and residual adds are
  recomputed from them in backward (selective checkpointing), so no host convolution runs twice.
  Hosts ddakern does not build (`ddakern.attach` on a torchvision ResNet) get the DDA part only.
- "all": recompute the host stages too, convolutions included; only stage boundaries are kept.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

from ddakern import profiling

MODES = ("none", "dda", "all")
KEPT_OPS = frozenset({torch.ops.aten.convolution.default})
"""What a selective region (`checkpoint(..., selective=True)`) keeps; every other op is recomputed."""
_HOOKS_KW = (
    {"respect_saved_tensors_hooks": True}
    if "respect_saved_tensors_hooks" in inspect.signature(torch.utils.checkpoint.checkpoint).parameters
    else {}
)
"""torch >= 2.14: tensors a selective region keeps pass through saved-tensor hooks (offloading, and
profiling.saved_tensor_bytes counting them); older torch lets them bypass the hooks."""


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


def _keep_convolutions(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in KEPT_OPS else CheckpointPolicy.PREFER_RECOMPUTE


@contextlib.contextmanager
def _entered(*contexts: contextlib.AbstractContextManager) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for c in contexts:
            stack.enter_context(c)
        yield


def _contexts(module: nn.Module, selective: bool) -> Callable[[], tuple[Any, Any]]:
    def make() -> tuple[Any, Any]:
        forward, again = (
            create_selective_checkpoint_contexts(_keep_convolutions)
            if selective
            else (contextlib.nullcontext(), contextlib.nullcontext())
        )
        return forward, _entered(scratch_bn_stats(module), again)

    return make


def wanted() -> bool:
    """Whether recomputing pays off now: only when autograd records a graph."""
    return torch.is_grad_enabled()


def checkpoint(module: nn.Module, fn: Callable[..., Any], *args: torch.Tensor, selective: bool = False) -> Any:
    """fn(*args) without keeping its intermediate activations; recomputed in backward, exactly.

    `module` holds the batch norms that `fn` runs. With `selective`, the outputs of KEPT_OPS (the
    convolutions) are kept and only the cheap rest runs again. Under torch.compile the compiler's own
    recomputation (which replays no buffer update) handles the region.
    """
    profiling.note_kept(*args)
    if torch.compiler.is_compiling():
        kw = {"context_fn": partial(create_selective_checkpoint_contexts, _keep_convolutions)} if selective else {}
        return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False, **kw)
    return torch.utils.checkpoint.checkpoint(
        fn, *args, use_reentrant=False, context_fn=_contexts(module, selective), **_HOOKS_KW
    )


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
