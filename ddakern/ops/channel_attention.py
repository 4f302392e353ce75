"""The fused channel attention `x * softmax_c(logits) [* scale] [+ x]` (DDA's channel gates): its one home.

- `reference`: plain PyTorch ops differentiated by autograd; it defines the meaning.
- `torch_forward`, `torch_backward`: the PyTorch math of the `torch` backend; the Triton launchers in
  kernels.channel_attention are the `triton` backend. Both follow kernels.contract.ChannelAttentionBackend
  (arguments: contract.ChannelInputs). out = x * k with k = softmax_c(logits) [* scale] [+ 1] per (n, c);
  the backward recomputes k from the saved logits (and scale).
- torch.library op `ddakern::channel_attention` and its backward op, with fakes and autograd.
- `channel_attention`: the public op: input checks, then the backend ddakern.dispatch picks.
- `SPEC`: its description for the tests, benchmarks, GPU check and offline compile (ddakern.ops.registry).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from ddakern.dispatch import backend_for
from ddakern.kernels_import import contract
from ddakern.ops import registry
from ddakern.ops._common import acc_dtype, check_arg, check_x, empty_ncp_like, triton_kernels

OP = "channel_attention"


def reference(x: Tensor, logits: Tensor, scale: Tensor | None = None, residual: bool = False) -> Tensor:
    """x * softmax_c(logits) [* scale] [+ x] with logits (and scale) N x C or N x C x 1 x 1."""
    n, c = x.shape[:2]
    y = torch.mul(x, torch.softmax(logits, dim=1).reshape(n, c, 1, 1))  # softmax in logits' own shape
    if scale is not None:
        y = torch.mul(y, scale.reshape(n, c, 1, 1))
    if residual:
        y = torch.add(x, y)
    return y


# ------------------------------------------------------------------------------- torch backend math


def _coef(
    x: torch.Tensor, logits: torch.Tensor, scale: torch.Tensor | None, residual: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, k): a = softmax_c(logits) and k = a [* scale] [+ 1], N x C in the accumulation dtype."""
    a = torch.softmax(logits, dim=1, dtype=acc_dtype(x))
    k = a if scale is None else a * scale
    if residual:
        k = k + 1 if k is a else k.add_(1)
    return a, k


def torch_forward(t: contract.ChannelInputs) -> Tensor:
    """ChannelAttentionBackend.forward (kernels.contract): one broadcast multiply."""
    x, logits, scale, residual = t
    a = torch.softmax(logits, dim=1, dtype=acc_dtype(x))
    k = a if scale is None else a.mul_(scale)
    if residual:
        k.add_(1)
    out = empty_ncp_like(x)
    torch.mul(x, k[:, :, None, None], out=out)
    return out


def torch_backward(grad: Tensor, t: contract.ChannelInputs, need_x: bool) -> tuple[Tensor, Tensor, Tensor]:
    """ChannelAttentionBackend.backward (kernels.contract): sums over positions, then softmax's backward."""
    x, logits, scale, residual = t
    a, k = _coef(x, logits, scale, residual)
    acc = a.dtype
    dx = x.new_empty(0)
    if need_x:
        dx = empty_ncp_like(x)
        torch.mul(grad, k[:, :, None, None], out=dx)
    # g[n, c] = sum_p grad * x, products in acc (exact for half-precision inputs)
    g = (grad * x if grad.dtype == acc else grad.to(acc).mul_(x)).sum(dim=(2, 3))
    da = g if scale is None else g * scale
    dl = torch._softmax_backward_data(da, a, 1, acc).to(logits.dtype)
    ds = logits.new_empty(0) if scale is None else g.mul_(a).to(scale.dtype)
    return dx, dl, ds


# ------------------------------------------------------------------------------ torch.library ops


def _impl(backend: str) -> Any:
    """The contract.ChannelAttentionBackend of `backend` ("torch" or "triton")."""
    return triton_kernels("channel_attention") if backend == "triton" else _TorchMath


class _TorchMath:
    """The torch backend under the launchers' names."""

    forward = staticmethod(torch_forward)
    backward = staticmethod(torch_backward)


@torch.library.custom_op("ddakern::channel_attention", mutates_args=())
def _forward_op(x: Tensor, logits: Tensor, scale: Tensor | None, residual: bool, backend: str) -> Tensor:
    """x * softmax_c(logits) [* scale] [+ x] with logits and scale N x C."""
    return _impl(backend).forward(contract.ChannelInputs(x, logits, scale, residual))


@_forward_op.register_fake
def _(x, logits, scale, residual, backend):
    return empty_ncp_like(x)


@torch.library.custom_op("ddakern::channel_attention_backward", mutates_args=())
def _backward_op(
    grad: Tensor, x: Tensor, logits: Tensor, scale: Tensor | None, residual: bool, need_x: bool, backend: str
) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dlogits, dscale); dx is empty when not needed, dscale when scale is None."""
    return _impl(backend).backward(grad, contract.ChannelInputs(x, logits, scale, residual), need_x)


@_backward_op.register_fake
def _(grad, x, logits, scale, residual, need_x, backend):
    dx = empty_ncp_like(x) if need_x else x.new_empty(0)
    ds = scale.new_empty(scale.shape) if scale is not None else logits.new_empty(0)
    return dx, logits.new_empty(logits.shape), ds


def _setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
    x, logits, scale, residual, backend = inputs
    ctx.has_scale = scale is not None
    ctx.save_for_backward(x, logits, scale if scale is not None else logits.new_empty(0))
    ctx.residual = residual
    ctx.backend = backend


def _autograd_backward(ctx: Any, grad: Tensor) -> tuple:
    x, logits, scale = ctx.saved_tensors
    need = ctx.needs_input_grad
    dx, dl, ds = _backward_op(grad, x, logits, scale if ctx.has_scale else None, ctx.residual, need[0], ctx.backend)
    return (dx if need[0] else None, dl if need[1] else None, ds if ctx.has_scale and need[2] else None, None, None)


_forward_op.register_autograd(_autograd_backward, setup_context=_setup_context)


# --------------------------------------------------------------------------------------- public op


def channel_attention(x: Tensor, logits: Tensor, scale: Tensor | None = None, residual: bool = False) -> Tensor:
    """x * softmax_c(logits) [* scale] [+ x]; logits and scale are N x C or N x C x 1 x 1.

    The backend is ddakern.dispatch's ("reference" runs `reference`).
    """
    x = check_x(x, OP)
    n, c = x.shape[:2]
    gate_shapes = ((n, c), (n, c, 1, 1))  # logits and scale
    logits = check_arg("logits", logits, x, gate_shapes, OP)
    if scale is not None:
        scale = check_arg("scale", scale, x, gate_shapes, OP)
    backend = backend_for(x)
    if backend == "reference":
        return reference(x, logits, scale, residual)
    scale2 = scale.reshape(n, c) if scale is not None else None
    return torch.ops.ddakern.channel_attention(x, logits.reshape(n, c), scale2, bool(residual), backend)


def _call(fn: Callable[..., Tensor], t: Mapping[str, Tensor], variant: str) -> Tensor:
    """fn with the scale when the variant names it, and the residual when it names that ("scale+residual")."""
    return fn(t["x"], t["logits"], t["scale"] if "scale" in variant else None, "residual" in variant)


# checked: the context path's gate with the GAP scale, plus the fusion's residual
SPEC = registry.register(
    registry.OpSpec(OP, channel_attention, reference, _call, ("plain", "scale+residual"), "scale+residual", inputs=(
        registry.Input("logits", "rows", init=("normal", 0.0, 2.0)),
        registry.Input("scale", "rows", init=("uniform", 0.5, 1.5)),  # the GAP scale of the context path
    ))
)  # fmt: skip
