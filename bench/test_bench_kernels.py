"""The fused DDA ops and one DDA block, forward and forward+backward, against the autograd reference.

Variants of each op: `reference` (plain PyTorch ops + autograd, the baseline), `torch` (the fused ops'
autograd functions with PyTorch math), `compile` (torch.compile of the reference, dynamic shapes) and
`triton` (the Triton kernels; CUDA only: the CPU interpreter is a correctness tool, not a speed).
Shapes are the ResNet-34 / ResNet-50 stage outputs at batch 48 on CUDA, a scaled-down subset on CPU
(`benchutil.SCALE`). Each benchmark records the minimal bytes moved (inputs read + outputs written, and
for backward the incoming gradient read and the input gradients written), the achieved GB/s, the bytes
autograd saves for backward (`ddakern.profiling.saved_tensor_bytes`) and, on CUDA, the peak memory.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import pytest
import torch
from benchutil import (
    DTYPES,
    SCALE,
    median_s,
    peak_memory_bytes,
    peak_memory_reset,
    skip_compile_if_disabled,
    sync,
)

from ddakern import DDA
from ddakern import functional as DF
from ddakern.dispatch import use_ops_backend
from ddakern.profiling import saved_tensor_bytes

OPS = ("attention_residual", "channel_attention")
PASSES = ("fwd", "fwd+bwd")
VARIANTS = ("reference", "torch", "compile", "triton")
_COMPILED: dict[str, Callable[..., torch.Tensor]] = {}


def nbytes(*tensors: torch.Tensor | None) -> int:
    """Total bytes of the given tensors (None entries count zero)."""
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


class OpCase:
    """Inputs of one fused op at one shape and dtype, and how to call an implementation on them."""

    def __init__(self, op: str, n: int, c: int, s: int, dtype: torch.dtype, device: torch.device) -> None:
        g = torch.Generator(device=device).manual_seed(113 + c + s)

        def randn(*shape: int, std: float = 1.0, mean: float = 0.0, d: torch.dtype = dtype) -> torch.Tensor:
            t = torch.randn(shape, generator=g, device=device, dtype=torch.float32).mul_(std).add_(mean)
            return t.to(d).requires_grad_()

        self.op = op
        self.x = randn(n, c, s, s)
        self.grad = randn(n, c, s, s).detach()
        if op == "attention_residual":
            self.logits = randn(n, c, s, s, std=2.0)
            self.weight = randn(c, std=0.2, mean=1.0, d=torch.float32)  # batch-norm affine stays fp32
            self.bias = randn(c, std=0.3, d=torch.float32)
            self.running = (torch.zeros(c, device=device), torch.ones(c, device=device))
            self.leaves = [self.x, self.logits, self.weight, self.bias]
        else:  # the context path's gate with the GAP scale, plus the fusion module's residual
            self.logits = randn(n, c, std=2.0)
            self.scale = randn(n, c, std=0.2, mean=1.0)
            self.leaves = [self.x, self.logits, self.scale]

    def call(self, fn: Callable[..., torch.Tensor], *leaves: torch.Tensor) -> torch.Tensor:
        """fn on the given leaves (training-mode batch norm for attention_residual)."""
        if self.op == "attention_residual":
            return fn(*leaves, *self.running, True)
        return fn(*leaves, True)

    def min_bytes(self, pass_: str) -> int:
        """Minimal traffic: inputs read + output written; backward adds dy read, inputs re-read, grads written."""
        fwd = nbytes(*self.leaves) + nbytes(self.x)  # every input read once, the output (x's size) written
        if pass_ == "fwd":
            return fwd
        return fwd + nbytes(self.grad) + 2 * nbytes(*self.leaves)  # dy, leaves re-read, one grad per leaf


def implementation(op: str, variant: str) -> tuple[str, Callable[..., torch.Tensor]]:
    """(kernel mode, callable) of a variant: the public op under a backend, or the compiled reference."""
    if variant == "compile":
        if op not in _COMPILED:
            _COMPILED[op] = torch.compile(importlib.import_module(f"ddakern.ops.{op}").reference, dynamic=True)
        return "reference", _COMPILED[op]
    return variant, getattr(DF, op)


def kernel_cases():
    """Every (op, pass, shape, dtype, variant) at this device's sizes."""
    for op in OPS:
        for pass_ in PASSES:
            for host, c, s in SCALE.kernel_shapes:
                for dname in DTYPES:
                    for variant in VARIANTS:
                        yield pytest.param(
                            op, pass_, host, c, s, dname, variant, id=f"{op}-{pass_}-{host}-{c}@{s}-{dname}-{variant}"
                        )


def record_timing(benchmark, moved: int | None, calls: int) -> None:
    """Per-call median, GB/s and peak memory into extra_info once the benchmark has run."""
    med = median_s(benchmark)
    if med is not None:
        per_call = med / calls
        benchmark.extra_info["per_call_s"] = per_call
        if moved:
            benchmark.extra_info["gbps"] = moved / per_call / 1e9
    benchmark.extra_info["peak_memory_bytes"] = peak_memory_bytes()


@pytest.mark.parametrize("op,pass_,host,c,s,dname,variant", list(kernel_cases()))
def test_fused_op(benchmark, op: str, pass_: str, host: str, c: int, s: int, dname: str, variant: str) -> None:
    if variant == "triton" and not SCALE.cuda:
        pytest.skip("Triton kernels are timed on CUDA only (on CPU they run in the interpreter, not a speed)")
    if variant == "compile":
        skip_compile_if_disabled(benchmark)
    case = OpCase(op, SCALE.kernel_batch, c, s, DTYPES[dname], SCALE.device)
    mode, fn = implementation(op, variant)
    calls = SCALE.kernel_calls

    def run() -> None:
        with use_ops_backend(mode):
            for _ in range(calls):
                if pass_ == "fwd":
                    with torch.no_grad():
                        case.call(fn, *case.leaves)
                else:
                    out = case.call(fn, *case.leaves)
                    torch.autograd.grad(out, case.leaves, case.grad)
            sync()

    run()  # warm-up: compilation, Triton JIT, allocator
    with use_ops_backend(mode):
        saved = saved_tensor_bytes(lambda *a: case.call(fn, *a), *case.leaves)
        saved_extra = saved_tensor_bytes(lambda *a: case.call(fn, *a), *case.leaves, exclude_args=True)
    moved = case.min_bytes(pass_)
    benchmark.group = f"{op} {pass_} {host} {c}@{s} {dname}"
    benchmark.extra_info.update(
        {
            "table": "fused ops",
            "op": op,
            "pass": pass_,
            "variant": variant,
            "baseline": "reference",
            "shape": [SCALE.kernel_batch, c, s, s],
            "dtype": dname,
            "device": str(SCALE.device),
            "calls_per_round": calls,
            "bytes_moved": moved,
            "saved_bytes": saved,
            "saved_extra_bytes": saved_extra,
        }
    )
    peak_memory_reset()
    benchmark.pedantic(run, rounds=SCALE.kernel_rounds, iterations=1)
    record_timing(benchmark, moved, calls)


BLOCK_VARIANTS = {"unfused": None, "fused-torch": "torch", "fused-triton": "triton"}


def block_cases():
    """(host, channels, stage, size, dtype, variant) of the DDA block benchmark on this device."""
    dtypes = DTYPES if SCALE.cuda else {"fp32": torch.float32}  # bf16 autocast of the block is slow on CPU
    for host, c, stage, s in SCALE.block_shapes:
        for dname in dtypes:
            for variant in BLOCK_VARIANTS:
                yield pytest.param(host, c, stage, s, dname, variant, id=f"{host}-dda{stage}-{c}@{s}-{dname}-{variant}")


@pytest.mark.parametrize("host,c,stage,s,dname,variant", list(block_cases()))
def test_dda_block(benchmark, host: str, c: int, stage: int, s: int, dname: str, variant: str) -> None:
    """One DDA block (training mode) forward+backward, fused=False vs fused=True: time and saved bytes."""
    mode = BLOCK_VARIANTS[variant]
    if mode == "triton" and not SCALE.cuda:
        pytest.skip("Triton kernels are timed on CUDA only (on CPU they run in the interpreter, not a speed)")
    torch.manual_seed(0)
    block = DDA(c, stage, fused_ops=mode is not None).to(SCALE.device).train()
    x = torch.randn(SCALE.kernel_batch, c, s, s, device=SCALE.device, requires_grad=True)
    grad = torch.randn_like(x)
    amp = dname != "fp32"

    def forward(inp: torch.Tensor) -> torch.Tensor:
        with torch.autocast(SCALE.device.type, dtype=DTYPES[dname], enabled=amp):
            return block(inp)

    def step() -> None:
        with use_ops_backend(mode or "reference"):
            block.zero_grad(set_to_none=True)
            x.grad = None
            out = forward(x)
            out.backward(grad.to(out.dtype))
            sync()

    if not benchmark.disabled:
        step()  # warm-up
    with use_ops_backend(mode or "reference"):
        saved = saved_tensor_bytes(forward, x)
    benchmark.group = f"DDA block fwd+bwd {host} stage {stage} {c}@{s} {dname}"
    benchmark.extra_info.update(
        {
            "table": "DDA block",
            "variant": variant,
            "baseline": "unfused",
            "shape": [SCALE.kernel_batch, c, s, s],
            "dtype": dname,
            "device": str(SCALE.device),
            "saved_bytes": saved,
        }
    )
    peak_memory_reset()
    benchmark.pedantic(step, rounds=SCALE.rounds + 2, iterations=1)
    record_timing(benchmark, None, 1)
