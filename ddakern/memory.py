"""Will a training step fit? Activation bytes per image from a real forward, plus the static state.

Activation bytes (what autograd keeps for backward, `profiling.saved_tensor_bytes`) are measured at
two small batch sizes on the CPU: they do not depend on the device and grow linearly with the batch,
so two points give bytes per image and a batch-independent part (e.g. autocast's weight copies).
Static state: weights, their gradients and the optimiser's per-parameter states (RAdam: 2).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ddakern import recompute
from ddakern.profiling import saved_tensor_bytes

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_UNITS = {"": 1, "b": 1, "k": 2**10, "kib": 2**10, "m": 2**20, "mib": 2**20, "g": 2**30, "gib": 2**30,
          "kb": 10**3, "mb": 10**6, "gb": 10**9, "t": 2**40, "tib": 2**40, "tb": 10**12}  # fmt: skip


def parse_bytes(text: str) -> int:
    """'24GiB', '80GB', '512MiB' or a plain number of bytes -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read {text!r} as a size; use e.g. 24GiB, 80GB or 512MiB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


@dataclass(frozen=True)
class Estimate:
    """Bytes of one training step: `static + fixed + per_image * batch`."""

    mode: str
    per_image: int
    fixed: int
    static: int

    def total(self, batch: int) -> int:
        return self.static + self.fixed + self.per_image * batch

    def max_batch(self, budget: int) -> int:
        """The largest batch whose step fits `budget` bytes (0 when none does)."""
        room = budget - self.static - self.fixed
        return max(room // self.per_image, 0) if self.per_image > 0 else 0


def static_bytes(model: nn.Module, optimizer_states: int = 2) -> int:
    """Weights + gradients + `optimizer_states` per-parameter tensors (RAdam, Adam: 2; SGD+momentum: 1)."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return weights + buffers + trainable * (1 + optimizer_states)


def step_bytes(model: nn.Module, image_size: int, batch: int, amp: str = "none") -> int:
    """Saved-for-backward bytes of one training forward at `batch` random images, parameters excluded
    (they count in static_bytes; autocast's low-precision copies of them do count here)."""
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {', '.join(AMP_DTYPES)}, got {amp!r}")
    x = torch.randn(batch, 3, image_size, image_size)
    dtype = AMP_DTYPES[amp]
    ctx = torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with ctx:
        return saved_tensor_bytes(model, x, exclude=list(model.parameters()))


def measure(
    model: nn.Module, image_size: int, amp: str = "none", modes: Iterable[str] = recompute.MODES,
    optimizer_states: int = 2, batches: tuple[int, int] = (2, 3),
) -> list[Estimate]:  # fmt: skip
    """One Estimate per recompute mode from real forwards at `batches` (CPU, training mode).

    The model's own recompute mode is put back afterwards and the global RNG state is left untouched
    (a training run's random stream stays the same with or without an estimate).
    """
    before = getattr(model, "recompute", "none")
    static = static_bytes(model, optimizer_states)
    model.train()
    out = []
    a, b = batches
    try:
        for mode in modes:
            recompute.set_recompute(model, mode)
            with torch.random.fork_rng(devices=[]):
                small, large = (step_bytes(model, image_size, n, amp) for n in (a, b))
            per_image = max((large - small) // (b - a), 0)
            out.append(Estimate(mode, per_image, max(small - per_image * a, 0), static))
    finally:
        recompute.set_recompute(model, before if isinstance(before, str) else "none")
    return out


def gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


def format_table(estimates: Sequence[Estimate], batch_sizes: Sequence[int], budget: int | None = None) -> str:
    """Modes x batch sizes in GiB, each mode's activation MiB per image, and the largest batch that fits."""
    head = ["mode", "MiB/image", *[f"b={n}" for n in batch_sizes]]
    if budget is not None:
        head.append(f"max batch in {gib(budget)} GiB")
    rows = []
    for e in estimates:
        row = [e.mode, f"{e.per_image / 2**20:.1f}"]
        for n in batch_sizes:
            cell = gib(e.total(n))
            row.append(cell + ("*" if budget is not None and e.total(n) > budget else ""))
        if budget is not None:
            row.append(str(e.max_batch(budget)))
        rows.append(row)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [head, *rows]]
    static = estimates[0].static if estimates else 0
    note = f"GiB per step: {gib(static)} GiB static (weights, gradients, optimiser state) + activations"
    if budget is not None:
        note += "; * = over budget"
    return "\n".join([*lines, note])
