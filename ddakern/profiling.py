"""Memory accounting helpers: bytes that autograd keeps alive for the backward pass."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

_active: list[dict[tuple[str, int], int]] = []
"""The storage tables of the saved_tensor_bytes measurements in progress (innermost last)."""


def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    st = t.untyped_storage()
    return str(t.device), st.data_ptr() if st.nbytes() else id(st)


def note_kept(*tensors: Any) -> None:
    """Count tensors that something other than autograd's saved tensors keeps for backward.

    Recomputed regions (ddakern.recompute) keep their inputs alive for the recomputation and save
    nothing inside; they call this so that saved_tensor_bytes sees those inputs.
    """
    if not _active or torch.compiler.is_compiling():
        return
    for t in tensors:
        if isinstance(t, torch.Tensor):
            _active[-1][_storage_key(t)] = t.untyped_storage().nbytes()


def saved_tensor_bytes(
    fn: Callable[..., Any], *args: Any, exclude_args: bool = False, exclude: Iterable[torch.Tensor] = ()
) -> int:
    """Bytes of the distinct storages that `fn(*args)` saves for backward (each storage counted once).

    Inputs that recomputed regions keep (see note_kept) count as saved. With exclude_args=True,
    storages of the tensor arguments themselves are not counted: the bytes the op keeps alive *in
    addition to* its inputs (which the caller usually holds anyway).
    """
    seen: dict[tuple[str, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[_storage_key(t)] = t.untyped_storage().nbytes()
        return t

    _active.append(seen)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = fn(*args)
    finally:
        _active.pop()
    del out
    if exclude_args:
        for a in args:
            if isinstance(a, torch.Tensor):
                seen.pop(_storage_key(a), None)
    for t in exclude:
        seen.pop(_storage_key(t), None)
    return sum(seen.values())
