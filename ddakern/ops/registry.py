"""Each fused op describes itself once (`OpSpec`, defined next to the op); everything else loops over them.

An op module in ddakern/ops/ defines `SPEC = register(OpSpec(...))`: its public function and reference,
the inputs of an example call at a given N x C x H x W shape (`Input`: shape kind, dtype, initial
values, whether its gradient is checked), how to call either function on them, and its variants (the
argument combinations that compile different kernels). The tests, the benchmarks, the GPU check and the
offline sm_90 compile take their ops from `ops()` (every module of this package is imported, so a new
op module is found without a list to extend) and build inputs, gradient names and bytes moved from
its spec; no consumer branches on an op's name.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Pass = Literal["fwd", "fwd+bwd"]
CallFn = Callable[[Callable[..., Tensor], Mapping[str, Tensor], str], Tensor]


@dataclass(frozen=True)
class Input:
    """One tensor argument of an op's example call.

    shape: "map" (N x C x H x W, the activation's layout), "rows" (N x C) or "channels" (C).
    dtype: "act" (the case's activation dtype) or "fp32" (kept fp32 as the layers pass it: batch-norm
    parameters and statistics beside bf16 activations).
    init: ("normal", mean, std), ("uniform", low, high) or ("fill", value, 0).
    grad: a leaf whose gradient is checked and timed (named "d" + name); False: state the op may update
    in place (running statistics), restored between runs.
    """

    name: str
    shape: Literal["map", "rows", "channels"]
    dtype: Literal["act", "fp32"] = "act"
    init: tuple[str, float, float] = ("normal", 0.0, 1.0)
    grad: bool = True


X = Input("x", "map")
"""Every op's first argument: the N x C x H x W activation (its output has this shape)."""


@dataclass(frozen=True)
class OpSpec:
    """A fused op's description: what tests, benchmarks, the GPU check and the offline compile need."""

    name: str  # the ddakern.ops module and the kernels module (also ddakern.functional.<name>)
    fused: Callable[..., Tensor]  # the public op (backend from ddakern.dispatch)
    reference: Callable[..., Tensor]  # plain PyTorch + autograd: defines the meaning
    call: CallFn  # call(fn, tensors by name, variant): fused or reference on an example's tensors
    variants: tuple[str, ...]  # argument combinations that compile different kernels (offline compile order)
    checked: str  # the variant tests, benchmarks and the GPU check run (the training-step one)
    inputs: tuple[Input, ...]  # the tensor arguments after x (X: N x C x H x W, differentiable; the output's shape)

    def __post_init__(self) -> None:
        if self.checked not in self.variants:
            raise ValueError(f"OpSpec {self.name}: checked variant {self.checked!r} is not among {self.variants}")
        if any(i.name in ("x", "grad") for i in self.inputs):
            raise ValueError(f"OpSpec {self.name}: x (the first argument) and grad are implied, not inputs")

    @property
    def arguments(self) -> tuple[Input, ...]:
        """Every tensor argument: x, then `inputs`."""
        return (X, *self.inputs)

    @property
    def grad_names(self) -> tuple[str, ...]:
        """The differentiable inputs, in order (their gradients are "d" + name)."""
        return tuple(i.name for i in self.arguments if i.grad)

    def example(
        self,
        shape: tuple[int, int, int, int],
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
        *,
        channels_last: bool = False,
        seed: int = 0,
        values: bool = True,
        variant: str | None = None,
    ) -> Example:
        """Inputs (and an output gradient) at N x C x H x W `shape`. Values come from a CPU generator seeded
        with `seed` (drawn x, the output gradient, then the other inputs: the same on every device);
        `values=False` leaves them uninitialised (fake tensors, offline compile)."""
        n, c, h, w = shape
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        g = torch.Generator(device="cpu").manual_seed(seed)
        sizes = {"map": (n, c, h, w), "rows": (n, c), "channels": (c,)}

        def make(i: Input) -> Tensor:
            size, dt = sizes[i.shape], dtype if i.dtype == "act" else torch.float32
            if not values:
                t = torch.empty(size, dtype=dt, device=device)
            else:
                kind, a, b = i.init
                if kind == "normal":
                    t = torch.randn(size, generator=g).mul_(b).add_(a)
                elif kind == "uniform":
                    t = torch.rand(size, generator=g).mul_(b - a).add_(a)
                elif kind == "fill":
                    t = torch.full(size, a)
                else:
                    raise ValueError(f"OpSpec {self.name}: input {i.name}: unknown init {kind!r}")
                t = t.to(device, dt)
            if i.shape == "map":
                t = t.contiguous(memory_format=fmt)
            return t.requires_grad_() if i.grad else t

        x = make(X)
        grad = make(Input("grad", "map", grad=False))
        tensors = {"x": x, **{i.name: make(i) for i in self.inputs}}
        return Example(self, tensors, grad, variant or self.checked)


def _nbytes(tensors: Sequence[Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class Example:
    """One op's inputs at one shape: the tensors by name, the output gradient, the variant to call."""

    spec: OpSpec
    tensors: dict[str, Tensor]
    grad: Tensor
    variant: str

    @property
    def leaves(self) -> list[Tensor]:
        """The differentiable inputs, in spec.grad_names order."""
        return [self.tensors[n] for n in self.spec.grad_names]

    @property
    def state(self) -> list[Tensor]:
        """Inputs the op may update in place (running statistics)."""
        return [self.tensors[i.name] for i in self.spec.arguments if not i.grad]

    def run(self, fn: Callable[..., Tensor], leaves: Sequence[Tensor] | None = None) -> Tensor:
        """fn (the fused op or the reference) on these inputs, the differentiable ones replaced by `leaves`."""
        tensors = dict(self.tensors)
        if leaves is not None:
            tensors.update(zip(self.spec.grad_names, leaves, strict=True))
        return self.spec.call(fn, tensors, self.variant)

    def to(self, dtype: torch.dtype) -> Example:
        """The same values in `dtype` (every input, fresh leaves and state): e.g. the float64 reference's case."""
        tensors = {}
        for i in self.spec.arguments:
            t = self.tensors[i.name].detach().to(dtype, copy=True)
            tensors[i.name] = t.requires_grad_() if i.grad else t
        return Example(self.spec, tensors, self.grad.to(dtype), self.variant)

    def keeping_state(self, fn: Callable[[], object]) -> object:
        """fn() with the state (running statistics) restored afterwards, so every run starts alike."""
        saved = [t.clone() for t in self.state]
        try:
            return fn()
        finally:
            for t, s in zip(self.state, saved, strict=True):
                t.copy_(s)

    def min_bytes(self, pass_: Pass) -> int:
        """Minimal traffic: every input read and the output (x's size) written once; the backward adds
        the output gradient read, the inputs read again and one gradient written per differentiable input."""
        leaves, x = self.leaves, self.tensors["x"]
        fwd = _nbytes(leaves) + _nbytes([x])
        return fwd if pass_ == "fwd" else fwd + _nbytes([self.grad]) + 2 * _nbytes(leaves)


_SPECS: dict[str, OpSpec] = {}


def register(spec: OpSpec) -> OpSpec:
    """Add an op's description (its module does `SPEC = register(OpSpec(...))`); returns it."""
    _SPECS[spec.name] = spec
    return spec


def _discover() -> None:
    """Import every module of ddakern.ops, so each op registers itself."""
    package = importlib.import_module("ddakern.ops")
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"ddakern.ops.{info.name}")


def ops() -> list[OpSpec]:
    """Every registered fused op, by name."""
    _discover()
    return [_SPECS[n] for n in sorted(_SPECS)]


def names() -> tuple[str, ...]:
    """The registered ops' names, sorted."""
    return tuple(s.name for s in ops())


def get(name: str) -> OpSpec:
    """The registered op `name`; a one-line KeyError naming the known ones otherwise."""
    _discover()
    if name not in _SPECS:
        raise KeyError(f"no fused op {name!r}; registered: {', '.join(sorted(_SPECS))}")
    return _SPECS[name]
