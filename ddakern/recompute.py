"""Exact activation recomputation: `torch.utils.checkpoint` without the second batch-norm update.

Plain checkpointing runs a region's forward twice per step, so every training-mode BatchNorm in it
would advance its running statistics (and `num_batches_tracked`) twice. `checkpoint` here runs the
recomputation with those batch norms updating scratch copies of their statistics (the same ops and
outputs, bit for bit), so the real ones are updated exactly once per step, as without recomputation.
RNG state and autocast are preserved by torch.utils.checkpoint itself (non-reentrant variant, which
also works with DDP and torch.compile).

Modes of a model (`set_recompute` / `model.set_grad_checkpointing(mode)`):
- "none": keep every activation (the default).
- "dda": recompute DDA's attention branches except their costly convolutions (`COSTLY_MACS`: their
  outputs are small for what they cost), and let the host keep only its convolution outputs: its
  batch norms, ReLUs, poolings and residual adds are recomputed from them in backward (selective
  checkpointing), so no host convolution runs twice. Hosts ddakern does not build (`ddakern.attach`
  on a torchvision ResNet) get the DDA part only.
- "all": recompute the host stages too, convolutions included; only stage boundaries are kept.
"""

from __future__ import annotations

import contextlib
import inspect
import math
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
"""What a selective region (`checkpoint(..., keep=...)`) may keep; every other op is recomputed."""
COSTLY_MACS = 1024
"""`keep="costly-convolutions"` keeps a convolution's output when recomputing it costs at least this
many multiply-adds per output element (input channels / groups x kernel taps, over stride^2 for a
transposed one). The 3x3 convolutions over many channels stay (the context path's deeper stages, the
spatial path, the fusion convolution); those over few channels at high resolution (resnet34_dda's
DDA1 adapters and first ResNet-18 stage), the upsamplers and the 1x1 convolutions run again. In
resnet34_dda / resnet50_dda at 224 px that keeps 72% / 82% of the DDA branches' convolution work for
32% / 38% of their convolution-output bytes."""
_HOOKS_KW = (
    {"respect_saved_tensors_hooks": True}
    if "respect_saved_tensors_hooks" in inspect.signature(torch.utils.checkpoint.checkpoint).parameters
    else {}
)
"""torch >= 2.14: tensors a selective region keeps pass through saved-tensor hooks (offloading, and
profiling.saved_tensor_bytes counting them); older torch lets them bypass the hooks."""


class Recomputable(nn.Module):
    """A block that checkpoints its own branches while its `recompute` flag is set (DDA). set_recompute's
    "dda" mode sets the flag on each one; a base class here, so that this module imports no layer."""

    recompute: bool = False


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


def macs_per_output(weight: torch.Tensor, stride: list[int], transposed: bool, groups: int) -> float:
    """Multiply-adds per output element of an aten.convolution with these arguments."""
    taps = weight.shape[2:].numel()
    if not transposed:
        return weight.shape[1] * taps  # weight: out x in/groups x kernel
    return weight.shape[0] / groups * taps / math.prod(stride)  # weight: in x out/groups x kernel


def _keep_convolutions(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in KEPT_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def _keep_costly_convolutions(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    costly = op in KEPT_OPS and macs_per_output(args[1], args[3], args[6], args[8]) >= COSTLY_MACS
    return CheckpointPolicy.MUST_SAVE if costly else CheckpointPolicy.PREFER_RECOMPUTE


POLICIES = {"convolutions": _keep_convolutions, "costly-convolutions": _keep_costly_convolutions}
"""What a region keeps besides its inputs (`checkpoint(keep=...)`); "nothing" keeps only the inputs."""


@contextlib.contextmanager
def _entered(*contexts: contextlib.AbstractContextManager) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for c in contexts:
            stack.enter_context(c)
        yield


def _contexts(module: nn.Module, keep: str) -> Callable[[], tuple[Any, Any]]:
    def make() -> tuple[Any, Any]:
        forward, again = (
            create_selective_checkpoint_contexts(POLICIES[keep])
            if keep != "nothing"
            else (contextlib.nullcontext(), contextlib.nullcontext())
        )
        return forward, _entered(scratch_bn_stats(module), again)

    return make


def wanted() -> bool:
    """Whether recomputing pays off now: only when autograd records a graph."""
    return torch.is_grad_enabled()


def checkpoint(module: nn.Module, fn: Callable[..., Any], *args: torch.Tensor, keep: str = "nothing") -> Any:
    """fn(*args) without keeping its intermediate activations; recomputed in backward, exactly.

    `module` holds the batch norms that `fn` runs. `keep` (a key of POLICIES) names the op outputs
    that are kept anyway, so that only the cheap rest runs again: "convolutions" (all of them) or
    "costly-convolutions" (those costing at least COSTLY_MACS per output element). Under
    torch.compile the compiler's own recomputation (which replays no buffer update) handles the region.
    """
    if keep != "nothing" and keep not in POLICIES:
        raise ValueError(f"keep must be 'nothing' or one of {', '.join(POLICIES)}, got {keep!r}")
    profiling.note_kept(*args)
    if torch.compiler.is_compiling():
        kw = {"context_fn": partial(create_selective_checkpoint_contexts, POLICIES[keep])} if keep in POLICIES else {}
        return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False, **kw)
    return torch.utils.checkpoint.checkpoint(
        fn, *args, use_reentrant=False, context_fn=_contexts(module, keep), **_HOOKS_KW
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
    for m in model.modules():
        if isinstance(m, Recomputable):
            m.recompute = mode == "dda"
    return model
