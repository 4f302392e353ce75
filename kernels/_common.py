"""Shared helpers for the Triton launchers: device guard, layout normalisation and the block-size budget.

Triton launches on the current CUDA device, not on the tensors' one: every launcher entry point is
wrapped in `on_input_device`, so that an op on cuda:1 while cuda:0 is current launches on cuda:1.

The budget is read from DDAKERN_TRITON_TUNING at the first launch that needs it (not at import), so a
malformed value fails only a Triton launch, with a one-line error naming the bad entry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import torch

from .interpret import triton_interpret_requested


def interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter (TRITON_INTERPRET on, read now)."""
    return triton_interpret_requested()


_P = ParamSpec("_P")
_R = TypeVar("_R")


def device_guard(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """torch.cuda.device(t.device) for a CUDA tensor (launches and allocations go there); else a no-op."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def on_input_device(launcher: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run a launcher under the device guard of its first argument: a tensor on the op's device, or an
    argument bundle of kernels.contract whose first field is one."""

    @functools.wraps(launcher)
    def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        first = args[0]
        with device_guard(first if isinstance(first, torch.Tensor) else first[0]):
            return launcher(*args, **kwargs)

    return guarded


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (and >= 1)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    """Ceiling division."""
    return -(-a // b)


# CUDA's grid limits: axis 0 up to 2**31 - 1 programs, axes 1 and 2 up to 65535 (a launch past them fails
# with "invalid argument"; the CPU interpreter has no limit). Every launcher puts the batch on axis 0.
GRID_LIMITS = (2**31 - 1, 65535, 65535)


def grid(*dims: int) -> tuple[int, ...]:
    """The launch grid `dims` (batch first), or a one-line ValueError naming the axis past CUDA's limit."""
    for axis, (size, limit) in enumerate(zip(dims, GRID_LIMITS)):
        if size > limit:
            raise ValueError(
                f"fused op: {size} programs on grid axis {axis} exceed CUDA's limit of {limit} "
                f"(grid {dims}); use --ops-backend torch for this input size"
            )
    return dims


@dataclass
class Tuning:
    """Block-size budget of the kernels; tests shrink it to exercise the chunked and split paths."""

    tile: int  # elements per [BLOCK_C, BLOCK_P] tile
    max_block_c: int  # channels per chunk; larger C loops over chunks (online softmax)
    target_programs: int  # split reductions until about this many programs run
    num_warps: int
    bwd_tile: int = 0  # attention_residual backward tile (0: same as tile); it keeps ~10 tiles live
    bwd_num_warps: int = 0  # attention_residual backward warps per program (0: same as num_warps)


TUNING_ENV = "DDAKERN_TRITON_TUNING"
POWERS_OF_TWO = ("tile", "max_block_c", "num_warps", "bwd_tile", "bwd_num_warps")
"""Tuning fields that size Triton blocks or warps: a power of two, or a launch fails deep inside Triton."""

# bwd_tile 2048: with 4096 the backward spills registers on sm_90 whenever its loads cannot be
# vectorised (H*W not a multiple of 16, e.g. 14x14); see bench/results/sm90_compile.md
GPU_TUNING = Tuning(tile=4096, max_block_c=1024, target_programs=1024, num_warps=8, bwd_tile=2048)
"""The default budget on a GPU (before DDAKERN_TRITON_TUNING); tests run it under the interpreter too."""
INTERPRETER_TUNING = Tuning(tile=1 << 16, max_block_c=4096, target_programs=1, num_warps=4)
"""The interpreter's default: it costs ~1-4 ms per program instance, so few programs with big tiles."""


def _default_tuning() -> Tuning:
    if interpreting():
        return dataclasses.replace(INTERPRETER_TUNING)
    return parse_tuning(os.environ.get(TUNING_ENV, ""), GPU_TUNING)


def parse_tuning(spec: str, base: Tuning) -> Tuning:
    """Apply "field=value,..." overrides (e.g. "tile=8192,num_warps=4") to base; errors name the field."""
    fields = {f.name for f in dataclasses.fields(Tuning)}
    changes: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in fields or not value.strip().isdigit() or int(value) < 1:
            raise ValueError(
                f"{TUNING_ENV}: bad entry {item!r}; expected field=positive integer with field in {sorted(fields)}"
            )
        if name in POWERS_OF_TWO and int(value) & (int(value) - 1):
            raise ValueError(f"{TUNING_ENV}: bad entry {item!r}; {name} must be a power of two (Triton's blocks are)")
        changes[name] = int(value)
    return dataclasses.replace(base, **changes)


TUNING: Tuning | None = None  # set at the first tuning() call (tests and sweeps may swap it)


def tuning() -> Tuning:
    """The block-size budget in force (read at each launch, so tests and sweeps can swap it)."""
    global TUNING
    if TUNING is None:
        TUNING = _default_tuning()
    return TUNING


@contextlib.contextmanager
def tuned(**overrides: int) -> Iterator[Tuning]:
    """Temporarily override fields of the block-size budget (benchmark sweeps, tests)."""
    global TUNING
    previous = tuning()
    TUNING = dataclasses.replace(previous, **overrides)
    try:
        yield TUNING
    finally:
        TUNING = previous


def sm_count(device: torch.device) -> int:
    """Number of streaming multiprocessors (1 on CPU/interpreter)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1


def as_ncp(t: torch.Tensor) -> tuple[torch.Tensor, int, int, int]:
    """View a 4-D N x C x H x W tensor as N x C x (H*W): returns (tensor, stride_n, stride_c, stride_p).

    Contiguous, channels_last, expanded (stride 0) and most sliced tensors merge H and W without a
    copy; any other layout is copied to contiguous memory first.
    """
    _, _, h, w = t.shape
    sn, sc, sh, sw = t.stride()
    if w == 1:
        sp = sh
    elif h == 1 or sh == w * sw:
        sp = sw
    else:
        t = t.contiguous()
        sn, sc, _, sp = t.stride()
    return t, sn, sc, sp


def blocks(c: int, hw: int, c_contiguous: bool, tile: int | None = None) -> tuple[int, int, int]:
    """Choose (BLOCK_C, BLOCK_P, NUM_CHUNKS) for a channel-softmax tile of at most `tile` elements."""
    tune = tuning()
    tile = tile or tune.tile
    max_c = tune.max_block_c if not c_contiguous else max(tune.max_block_c, 2048)
    block_c = min(next_pow2(c), max_c, tile)
    block_p = max(1, min(next_pow2(hw), tile // block_c))
    return block_c, block_p, cdiv(c, block_c)


def split_range(hw: int, block_p: int, n: int) -> tuple[int, int]:
    """Split the H*W positions of each sample into ranges so that about `target_programs` run.

    Returns (range_len, num_splits); range_len is a multiple of block_p and of 16, so that every range
    starts 16-element aligned when H*W is: the compiler can then vectorise the loads (unaligned
    ranges cost ~3x the registers on sm_90; see bench/results/sm90_compile.md).
    """
    want = max(1, min(cdiv(hw, block_p), cdiv(tuning().target_programs, max(n, 1))))
    step = max(block_p, 16)
    rng = cdiv(cdiv(hw, want), step) * step
    return rng, cdiv(hw, rng)
