"""Helpers shared by the fused ops and their Triton launchers: input checks, layouts, dtypes, kernel loading.

Nothing here imports triton: `triton_kernels(name)` loads a Triton module only when a launch needs it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
KERNELS_PACKAGE = "ddakern.kernels"


def acc_dtype(t: Tensor) -> torch.dtype:
    """Accumulation (statistics) dtype: fp64 for fp64 tensors, fp32 otherwise."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def mergeable(t: Tensor) -> bool:
    """Whether a 4-D N x C x H x W tensor can be viewed as N x C x (H*W) without copying."""
    _, _, h, w = t.shape
    return w == 1 or h == 1 or t.stride(2) == w * t.stride(3)


def empty_ncp_like(t: Tensor) -> Tensor:
    """torch.empty_like(t) (same memory format) unless that layout cannot merge H and W: then contiguous."""
    out = torch.empty_like(t)
    return out if mergeable(out) else torch.empty_like(t, memory_format=torch.contiguous_format)


def like_layout(t: Tensor, ref: Tensor) -> Tensor:
    """t in the memory format empty_ncp_like(ref) has (the fake implementations promise it)."""
    if t.stride() == ref.stride():
        return t
    want = empty_ncp_like(ref)
    return t if want.stride() == t.stride() else want.copy_(t)


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


def check_x(x: object, op: str) -> Tensor:
    """x is a non-empty floating-point N x C x H x W Tensor."""
    x = check_tensor("x", x, op)
    if x.dim() != 4:
        raise ValueError(f"{op}: x must be N x C x H x W, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{op}: x must not be empty, got shape {tuple(x.shape)}")
    return x


def _load_source_kernels() -> ModuleType:
    """The repository's kernels/ folder (source tree on PYTHONPATH, no install) as package ddakern.kernels."""
    folder = Path(__file__).resolve().parents[2] / "kernels"
    spec = importlib.util.spec_from_file_location(
        KERNELS_PACKAGE, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    if spec is None or spec.loader is None or not (folder / "__init__.py").is_file():
        raise ModuleNotFoundError(f"no Triton kernels: {KERNELS_PACKAGE} is not installed and {folder} is missing")
    module = importlib.util.module_from_spec(spec)
    sys.modules[KERNELS_PACKAGE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[KERNELS_PACKAGE]
        raise
    return module


def kernels_package() -> ModuleType:
    """ddakern.kernels: the installed package (wheel, editable install) or else the source tree's kernels/."""
    if KERNELS_PACKAGE in sys.modules:
        return sys.modules[KERNELS_PACKAGE]
    try:
        return importlib.import_module(KERNELS_PACKAGE)
    except ModuleNotFoundError as e:
        if e.name != KERNELS_PACKAGE:
            raise
    return _load_source_kernels()


def triton_kernels(name: str) -> ModuleType:
    """The Triton module ddakern.kernels.<name> (imports triton; called only when a launch needs it)."""
    kernels_package()
    return importlib.import_module(f"{KERNELS_PACKAGE}.{name}")
