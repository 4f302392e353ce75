"""Helpers shared by the fused ops: input checks, dtypes, and the (lazy) import of the Triton kernels.

The kernels package is imported the ordinary way and only in one direction (ddakern -> kernels, never
back): as `ddakern.kernels` where ddakern is installed (the wheel maps the kernels/ folder there), else as
the source tree's top-level `kernels` package beside ddakern/ (a checkout on PYTHONPATH, no install).
Importing it imports no triton: its layout helpers (kernels.layout) are used here; a Triton module
(`triton_kernels(name)`) is imported only when a launch needs it.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor

from ddakern.kernels_import import kernels_module
from ddakern.kernels_import import layout as _layout

empty_ncp_like = _layout.empty_ncp_like
like_layout = _layout.like_layout
mergeable = _layout.mergeable

FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def acc_dtype(t: Tensor) -> torch.dtype:
    """Accumulation (statistics) dtype: fp64 for fp64 tensors, fp32 otherwise."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def check_tensor(name: str, t: object, op: str) -> Tensor:
    """t itself when it is a floating-point Tensor; else a one-line TypeError naming op and argument."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    if t.dtype not in FLOATS:
        raise TypeError(f"{op}: {name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    return t


def check_like(name: str, t: Tensor, x: Tensor, shapes: tuple[tuple[int, ...], ...], op: str) -> None:
    """t has one of `shapes` and lives on x's device."""
    if tuple(t.shape) not in shapes:
        want = " or ".join(str(tuple(s)) for s in shapes)
        raise ValueError(f"{op}: {name} must have shape {want}, got {tuple(t.shape)}")
    if t.device != x.device:
        raise ValueError(f"{op}: {name} is on {t.device} but x is on {x.device}")


def check_same_dtype(name: str, t: Tensor, x: Tensor, op: str) -> None:
    """t has x's dtype (the fused ops compute in one input dtype)."""
    if t.dtype != x.dtype:
        raise TypeError(f"{op}: {name} dtype {t.dtype} differs from x dtype {x.dtype}")


def check_arg(
    name: str, t: object, x: Tensor, shapes: tuple[tuple[int, ...], ...], op: str, *, same_dtype: bool = True
) -> Tensor:
    """t itself when it is a floating-point Tensor of one of `shapes` on x's device (and of x's dtype when
    `same_dtype`); else a one-line error naming op and argument."""
    t = check_tensor(name, t, op)
    check_like(name, t, x, shapes, op)
    if same_dtype:
        check_same_dtype(name, t, x, op)
    return t


def check_x(x: object, op: str) -> Tensor:
    """x is a non-empty floating-point N x C x H x W Tensor."""
    x = check_tensor("x", x, op)
    if x.dim() != 4:
        raise ValueError(f"{op}: x must be N x C x H x W, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{op}: x must not be empty, got shape {tuple(x.shape)}")
    return x


def triton_kernels(name: str) -> ModuleType:
    """The kernels module `name` (e.g. "attention_residual": imports triton; called only when a launch needs it)."""
    return kernels_module(name)
