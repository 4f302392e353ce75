"""Backend selection for the fused ops: `use_ops_backend(mode)` as a global setting or a context manager.

Modes: "reference" (plain PyTorch ops + autograd), "torch" (the fused ops' autograd functions with
PyTorch math), "triton" (Triton kernels; CUDA, or CPU under TRITON_INTERPRET=1) and "auto"
(triton for CUDA tensors when triton is installed; on CPU the torch backend for fp32/fp64 maps of at
least CPU_TORCH_MIN_NUMEL elements, the reference below that and for half precision).

Why "auto" falls back to the reference on CPU: each torch-backend call goes through torch.library's
Python custom-op dispatch (schema defaults, aliasing checks, a second custom op for the backward:
about 0.4 ms forward and 2 ms forward+backward of fixed cost per call, profiled with cProfile) and
launches more small ATen kernels than the reference, because its backward recomputes the softmax
instead of keeping it. Below about 2**18 elements that fixed cost outweighs the saved passes, and
for bf16/fp16 the torch backend's upcast copies cost more than the reference's native kernels.
`use_kernels` is the old name of `use_ops_backend`, kept as an alias.

Whether triton is installed (TRITON_AVAILABLE) and whether it interprets (TRITON_INTERPRETING) are
decided once, at import: `backend_for` runs inside compiled regions, and torch 2.11's compiler cannot
trace `importlib.util.find_spec` (every fused op would break the graph; fullgraph=True would fail).
TRITON_INTERPRET must be set before triton is imported anyway, so reading it once loses nothing.
"""

from __future__ import annotations

import importlib.util
from types import TracebackType

import torch

from .kernels_import import interpret

MODES = ("auto", "reference", "torch", "triton")
CPU_TORCH_MIN_NUMEL = 2**18
"""Smallest CPU map (elements) for which "auto" picks the torch backend over the reference."""
_mode = "auto"

TRITON_AVAILABLE: bool = importlib.util.find_spec("triton") is not None
"""Whether the triton package is installed (found at import, not imported)."""
TRUE_VALUES = interpret.TRUE_VALUES
triton_interpret_requested = interpret.triton_interpret_requested
"""The one TRITON_INTERPRET parser (kernels/interpret.py), as Triton parses it."""

TRITON_INTERPRETING: bool = triton_interpret_requested()
"""Whether TRITON_INTERPRET was on at import: Triton kernels then run on CPU tensors."""


class _ModeRestorer:
    """Returned by use_ops_backend; restores the previous mode when used as a context manager."""

    def __init__(self, previous: str, mode: str) -> None:
        self.previous = previous
        self.mode = mode

    def __enter__(self) -> _ModeRestorer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        global _mode
        _mode = self.previous

    def __repr__(self) -> str:
        return f"use_ops_backend({self.mode!r})"


def use_ops_backend(mode: str) -> _ModeRestorer:
    """Set the global fused-op backend; `with use_ops_backend(m):` restores the previous one on exit."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"use_ops_backend: mode must be one of {MODES}, got {mode!r}")
    previous, _mode = _mode, mode
    return _ModeRestorer(previous, mode)


use_kernels = use_ops_backend  # the old name, kept as a documented alias


def current_mode() -> str:
    """The active mode ("auto", "reference", "torch" or "triton")."""
    return _mode


def triton_available() -> bool:
    """Whether the triton package is installed (TRITON_AVAILABLE, decided at import)."""
    return TRITON_AVAILABLE


def triton_interpreting() -> bool:
    """Whether TRITON_INTERPRET=1 lets Triton kernels run on CPU tensors (decided at import)."""
    return TRITON_INTERPRETING


def backend_for(t: torch.Tensor) -> str:
    """Resolve the active mode for tensors on t's device to "reference", "torch" or "triton"."""
    mode = _mode
    if mode == "auto":
        if t.is_cuda:
            return "triton" if t.dtype != torch.float64 and triton_available() else "torch"
        fast = t.dtype in (torch.float32, torch.float64) and t.numel() >= CPU_TORCH_MIN_NUMEL
        return "torch" if fast else "reference"
    if mode == "triton":
        if not triton_available():
            raise RuntimeError("use_ops_backend('triton'): the triton package is not installed")
        if not t.is_cuda and not triton_interpreting():
            raise ValueError(
                f"use_ops_backend('triton') needs CUDA tensors (got {t.device}); set TRITON_INTERPRET=1 before "
                "importing ddakern to run the kernels on CPU"
            )
        if t.dtype == torch.float64:
            raise TypeError("use_ops_backend('triton') supports float32, float16 and bfloat16, got float64")
    return mode
