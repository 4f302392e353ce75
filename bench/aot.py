"""Compile the Triton kernels for a CUDA GPU on a machine that has none (a developer tool, not installed).

Inside `capture()` kernel launches are recorded instead of run: Triton's active driver is replaced by
one that reports the target GPU, and the JIT cache hook skips the launch. `compile_launch` builds a
recorded specialization to a cubin with the ptxas that ships with Triton, and `resource_usage` reads
its registers, spills and shared memory with the bundled cuobjdump. This catches what the CPU
interpreter cannot (compile errors, register spills, unvectorised loads) before a GPU is used.

The launchers run for real on CPU tensors (only the kernel launch is skipped), so their block-size
choices are exactly those a CUDA run would make. Requires TRITON_INTERPRET unset: under the
interpreter `triton.jit` yields interpreted functions that cannot be compiled.
"""

from __future__ import annotations

import contextlib
import re
import struct
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import triton
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime import driver as _driver
from triton.runtime.jit import JITFunction

from bench.aot_trace import Call, recording, replay
from ddakern.ops import registry
from ddakern.ops._common import triton_kernels

H200 = GPUTarget("cuda", 90, 32)  # H100 / H200 (sm_90), 32-thread warps


@dataclass
class Launch:
    """One recorded kernel specialization and the grid it was launched with."""

    name: str
    fn: JITFunction
    signature: dict[str, str]
    constants: dict[tuple[int, ...], Any]
    attrs: dict[Any, Any]
    options: dict[str, Any]
    grid: tuple[int, int, int]
    key: str = field(repr=False, default="")

    def named_constants(self) -> dict[str, Any]:
        """The constexpr arguments (and ints specialised to constants) by parameter name."""
        return {self.fn.arg_names[k[0]]: v for k, v in sorted(self.constants.items()) if len(k) == 1}

    @property
    def programs(self) -> int:
        g0, g1, g2 = self.grid
        return g0 * g1 * g2


class _OfflineDriver:
    """Stand-in for Triton's CUDA driver: reports `target` so launchers specialise for it."""

    def __init__(self, target: GPUTarget) -> None:
        self.target = target

    def get_current_target(self) -> GPUTarget:
        return self.target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def is_active(self) -> bool:
        return True


@contextlib.contextmanager
def capture(target: GPUTarget = H200) -> Iterator[list[Launch]]:
    """Record (and skip) every Triton launch in the block; yields the list it fills, one entry per
    distinct specialization, in launch order."""
    if triton_kernels("_common").interpreting():
        raise RuntimeError("bench.aot needs TRITON_INTERPRET unset: interpreted kernels cannot be compiled")
    launches: list[Launch] = []
    seen: set[str] = set()
    grid_now: list[tuple[int, int, int]] = [(1, 1, 1)]
    original_run = JITFunction.run

    def run(self: JITFunction, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> Any:
        g = tuple(grid) + (1,) * (3 - len(grid)) if not callable(grid) else (0, 0, 0)
        grid_now[0] = g  # type: ignore[assignment]
        return original_run(self, *args, grid=grid, warmup=warmup, **kwargs)

    def hook(*, key: Any, fn: Any, compile: dict[str, Any], **_: Any) -> bool:
        k = str(key)
        if k not in seen:
            seen.add(k)
            options = {n: compile[n] for n in ("num_warps", "num_ctas", "num_stages", "enable_fp_fusion")}
            launches.append(
                Launch(
                    fn.name,
                    fn.jit_function,
                    dict(compile["signature"]),
                    dict(compile["constants"]),
                    dict(compile["configs"][0]),
                    options,
                    grid_now[0],
                    k,
                )  # fmt: skip
            )
        return True  # skip compiling and launching

    previous_hook, previous_driver = knobs.runtime.jit_cache_hook, _driver._active
    _driver.set_active(_OfflineDriver(target))  # type: ignore[arg-type]
    knobs.runtime.jit_cache_hook = hook
    JITFunction.run = run  # type: ignore[method-assign]
    try:
        yield launches
    finally:
        JITFunction.run = original_run  # type: ignore[method-assign]
        knobs.runtime.jit_cache_hook = previous_hook
        _driver._active = previous_driver  # None: the real driver is created lazily on next use


def compile_launch(launch: Launch, target: GPUTarget = H200) -> Any:
    """Compile one recorded specialization through ptxas to a cubin (a triton CompiledKernel)."""
    src = ASTSource(launch.fn, launch.signature, launch.constants, launch.attrs)
    return triton.compile(src, target=target, options=dict(launch.options))


def _tool(name: str) -> Path:
    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name


_RES = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def resource_usage(compiled: Any) -> dict[str, int]:
    """Registers per thread, stack and local (spill) bytes, static shared bytes and SASS instruction
    count of a compiled kernel, plus Triton's dynamic shared memory and the widest vector load / store
    in its PTX (elements)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        cmd = [str(_tool("cuobjdump")), "-res-usage", f.name]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    m = _RES.search(out.stdout)
    if m is None:
        raise RuntimeError(f"cuobjdump -res-usage printed no resource line:\n{out.stdout}{out.stderr}")
    regs, stack, shared, local = (int(v) for v in m.groups())
    instructions = sass_instructions(compiled.asm["cubin"])
    ptx = compiled.asm["ptx"]
    return {
        "registers": regs,
        "stack_bytes": stack,
        "local_bytes": local,
        "sass_instructions": instructions,  # static count: loops run their bodies many times
        "static_shared_bytes": shared,
        "shared_bytes": int(compiled.metadata.shared),
        "load_vector": max((int(v) for v in re.findall(r"ld\.global[.\w]*\.v(\d)", ptx)), default=1),
        "store_vector": max((int(v) for v in re.findall(r"st\.global[.\w]*\.v(\d)", ptx)), default=1),
    }


def sass_instructions(cubin: bytes) -> int:
    """Static SASS instruction count: the size of the cubin's .text sections over 16 bytes (every
    instruction is 128 bits wide since Volta). Read from the ELF section headers, no tool needed."""
    if cubin[:4] != b"\x7fELF" or cubin[4] != 2:
        raise ValueError("not a 64-bit ELF cubin")
    (shoff,) = struct.unpack_from("<Q", cubin, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", cubin, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", cubin, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]

    def name(h: tuple) -> bytes:
        start = names_at + h[0]
        return cubin[start : cubin.index(b"\0", start)]

    return sum(h[5] for h in headers if name(h).startswith(b".text.")) // 16


def occupancy(registers: int, shared_bytes: int, num_warps: int) -> int:
    """Resident warps per SM on sm_90 (64K registers, 228 KiB shared, 64 warps, 32 blocks per SM)."""
    regs_per_warp = -(-max(registers, 1) * 32 // 256) * 256  # allocated in units of 256 per warp
    by_regs = (65536 // regs_per_warp) // num_warps
    by_shared = (233472 // shared_bytes) if shared_bytes else 32
    return min(by_regs, by_shared, 32, 64 // num_warps) * num_warps


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Case:
    """One hand-picked fused-op case for the quick compile: op, N x C x H x W shape, activation dtype,
    layout and op variant (one of its OpSpec's, ddakern.ops.registry). Its calls are those the op's public
    function makes on the op's registered example inputs (fake tensors): the inputs the layers pass
    (bench.aot_trace finds the real ones; a test checks that these agree with it): fp32 batch-norm
    weight, bias and statistics beside any activation dtype, N x C logits and scale in the activation dtype."""

    op: str  # a registered op's name
    shape: tuple[int, int, int, int]
    dtype: str
    channels_last: bool
    variant: str  # attention_residual: "train" / "eval"; channel_attention: "plain" / "scale" / "residual" / ...

    def __str__(self) -> str:
        n, c, h, w = self.shape
        layout = "nhwc" if self.channels_last else "nchw"
        return f"{self.op}[{self.variant}] {n}x{c}x{h}x{w} {self.dtype} {layout}"

    def calls(self) -> list[Call]:
        """The ddakern:: op calls of this case (forward and backward), recorded on fake tensors."""
        spec = registry.get(self.op)
        with recording() as calls:
            ex = spec.example(self.shape, DTYPES[self.dtype], channels_last=self.channels_last, values=False,
                              variant=self.variant)  # fmt: skip
            ex.run(spec.fused).backward(ex.grad)
        return list(dict.fromkeys(calls))

    def launch(self) -> None:
        for call in self.calls():
            replay(call)


class Launcher(Protocol):
    """A case to compile: its str names it, launch() makes its launcher calls."""

    def launch(self) -> None: ...


def collect(cases: Sequence[Launcher], target: GPUTarget = H200) -> list[dict[str, Any]]:
    """Compile every distinct specialization the cases launch; one record per specialization with the
    cases that use it, its constexprs, grid and resource usage (or the compile error). Identical
    specializations (same constexprs, dtypes, alignment and options: Triton's own cache key) compile
    once. `id` ("case:launch", the first launch of it) names the record across Triton versions."""
    records: dict[str, dict[str, Any]] = {}
    for i, case in enumerate(cases):
        with capture(target) as launches:
            case.launch()
        for j, launch in enumerate(launches):
            rec = records.get(launch.key)
            if rec is None:
                rec = records[launch.key] = {"kernel": launch.name, "id": f"{i}:{j}", "launch": launch, "cases": []}
            rec["cases"].append(str(case))
    out = []
    for rec in records.values():
        launch: Launch = rec.pop("launch")
        rec["constants"] = {k: v for k, v in launch.named_constants().items() if k.isupper()}
        rec["dtypes"] = sorted({t for t in launch.signature.values() if t.startswith("*")})
        rec["num_warps"] = launch.options["num_warps"]
        rec["programs"] = launch.programs
        try:
            usage = resource_usage(compile_launch(launch, target))
        except Exception as err:  # report every failing specialization, not just the first
            rec["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
        else:
            rec.update(usage)
            rec["warps_per_sm"] = occupancy(usage["registers"], usage["shared_bytes"], rec["num_warps"])
        out.append(rec)
    return out
