"""The fused DDA ops and one DDA block, forward and forward+backward, against the autograd reference.

Variants of each op: `reference` (plain PyTorch ops + autograd, the baseline), `torch` (the fused ops'
autograd functions with PyTorch math), `compile` (torch.compile of the reference, dynamic shapes) and
`triton` (the Triton kernels; CUDA only: the CPU interpreter is a correctness tool, not a speed).
Shapes are the ResNet-34 / ResNet-50 stage outputs at batch 48 on CUDA, a scaled-down subset on CPU
(`benchutil.SCALE`). Each benchmark records the minimal bytes moved (inputs read + outputs written, and
for backward the incoming gradient read and the input gradients written), the achieved GB/s, the bytes
autograd saves for backward (`ddakern.profiling.saved_tensor_bytes`) and, on CUDA, the peak memory.
Each also checks its result outside the timing: the op's output and gradients are finite, shaped like the
reference's and within the project's bar of the float64 reference; the block's gradients from the timed
step are finite and, fused, match the unfused block's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from benchutil import (
    DTYPES,
    SCALE,
    assert_matches_reference,
    median_s,
    peak_memory_bytes,
    peak_memory_reset,
    skip_compile_if_disabled,
    sync,
)

from ddakern import DDA
from ddakern.dispatch import use_ops_backend
from ddakern.ops import registry
from ddakern.profiling import saved_tensor_bytes

PASSES = ("fwd", "fwd+bwd")
VARIANTS = ("reference", "torch", "compile", "triton")
_COMPILED: dict[str, Callable[..., torch.Tensor]] = {}


class OpCase:
    """One registered op's example inputs at one shape and dtype (ddakern.ops.registry; its checked variant:
    attention_residual with training-mode batch norm, channel_attention with the context path's GAP scale
    plus the fusion module's residual), and how to call an implementation on them."""

    def __init__(self, op: str, n: int, c: int, s: int, dtype: torch.dtype, device: torch.device) -> None:
        self.op = op
        self.spec = registry.get(op)
        self.example = self.spec.example((n, c, s, s), dtype, device, seed=113 + c + s)
        self.names = self.spec.grad_names
        self.x, self.grad, self.leaves = self.example.tensors["x"], self.example.grad, self.example.leaves

    def call(self, fn: Callable[..., torch.Tensor], *leaves: torch.Tensor) -> torch.Tensor:
        """fn on the given leaves."""
        return self.example.run(fn, leaves)

    def outputs(self, fn: Callable[..., torch.Tensor], pass_: str) -> dict[str, torch.Tensor]:
        """One call as the timed loop makes it: the output and, for fwd+bwd, the gradient of every input."""
        if pass_ == "fwd":
            with torch.no_grad():
                return {"out": self.call(fn, *self.leaves)}
        out = self.call(fn, *self.leaves)
        grads = torch.autograd.grad(out, self.leaves, self.grad)
        return {"out": out.detach(), **{f"d{name}": g for name, g in zip(self.names, grads, strict=True)}}

    def double(self) -> OpCase:
        """The same inputs in float64 (fresh leaves and running statistics): the exact reference's case."""
        twin = copy.copy(self)
        twin.example = self.example.to(torch.float64)
        twin.x, twin.grad, twin.leaves = twin.example.tensors["x"], twin.example.grad, twin.example.leaves
        return twin

    def min_bytes(self, pass_: str) -> int:
        """Minimal traffic: inputs read + output written; backward adds dy read, inputs re-read, grads written."""
        return self.example.min_bytes(pass_)  # type: ignore[arg-type]


def reference_of(op: str) -> Callable[..., torch.Tensor]:
    """The plain-PyTorch autograd reference of an op."""
    return registry.get(op).reference


def implementation(op: str, variant: str) -> tuple[str, Callable[..., torch.Tensor]]:
    """(kernel mode, callable) of a variant: the public op under a backend, or the compiled reference."""
    if variant == "compile":
        if op not in _COMPILED:
            _COMPILED[op] = torch.compile(reference_of(op), dynamic=True)
        return "reference", _COMPILED[op]
    return variant, registry.get(op).fused


def check_op_results(case: OpCase, pass_: str, variant: str) -> None:
    """One call of the variant outside the timing: finite, right shapes, as close to float64 as the reference."""
    mode, fn = implementation(case.op, variant)
    with use_ops_backend(mode):
        got = case.outputs(fn, pass_)
    same_dtype = got if variant == "reference" else case.outputs(reference_of(case.op), pass_)
    assert_matches_reference(got, same_dtype, case.double().outputs(reference_of(case.op), pass_))


def kernel_cases():
    """Every (registered op, pass, shape, dtype, variant) at this device's sizes."""
    for op in registry.names():
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
    check_op_results(case, pass_, variant)
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


def block_forward(block: DDA, inp: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The block under autocast to `dtype` (none for fp32 and float64)."""
    with torch.autocast(inp.device.type, dtype=dtype, enabled=dtype in (torch.bfloat16, torch.float16)):
        return block(inp)


def block_grads(block: DDA, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The gradients the block's last backward left: the input's and every parameter's."""
    grads = {"dx": x.grad, **{f"d{name}": p.grad for name, p in block.named_parameters()}}
    missing = [name for name, g in grads.items() if g is None]
    assert not missing, f"no gradient reached {missing}"
    return grads


def block_step_grads(
    block: DDA, x: torch.Tensor, grad: torch.Tensor, dtype: torch.dtype, mode: str
) -> dict[str, torch.Tensor]:
    """One training-mode fwd+bwd of the block on a copy of x, and the gradients it computes."""
    leaf = x.detach().requires_grad_()
    block.zero_grad(set_to_none=True)
    with use_ops_backend(mode):
        out = block_forward(block, leaf, dtype)
        out.backward(grad.to(out.dtype))
    return block_grads(block, leaf)


def check_block_grads(block: DDA, x: torch.Tensor, grad: torch.Tensor, dtype: torch.dtype, mode: str) -> None:
    """The gradients of the benchmarked (last) step: finite and of the right shapes; for the fused block also as
    close to the unfused block in float64 as the unfused block in the benchmark's dtype. On CPU (fp32 only, no
    TF32) the unfused fp32 block stands for float64: the fused one must match it within 1e-5 relative; the
    float64 bar on the real op shapes is test_fused_op's, and tests/test_fused_models.py's on whole models."""
    got = block_grads(block, x)
    same_dtype = exact = got  # the unfused block is the reference: finite and right shapes only
    if mode != "reference":
        unfused = copy.deepcopy(block)
        unfused.fused_ops = False
        same_dtype = exact = block_step_grads(unfused, x, grad, dtype, "reference")
        if SCALE.cuda:  # bf16 autocast and TF32 convolutions: only float64 is exact
            exact = block_step_grads(
                copy.deepcopy(unfused).double(), x.double(), grad.double(), torch.float64, "reference"
            )
    assert_matches_reference(got, same_dtype, exact)


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

    def forward(inp: torch.Tensor) -> torch.Tensor:
        return block_forward(block, inp, DTYPES[dname])

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
    check_block_grads(block, x, grad, DTYPES[dname], mode or "reference")
