"""The fused-op calls that training, evaluation and prediction really make, found by running the models.

`trace(run)` builds a registered DDA model with fused ops on fake tensors (no memory, no arithmetic)
and runs the step the way the engine does: autocast (bf16 / fp16) where the run uses it, channels_last
model and input where it does, train mode with a backward, or eval mode without gradients. A dispatch
mode records every `ddakern::` op the layers call, with each tensor argument's shape, strides, storage
offset and dtype, so the parameter dtypes the real layers pass (fp32 batch-norm weight and running
statistics beside bf16 activations under AMP) and the gradient layouts autograd delivers come from the
code itself and cannot drift from a hand-written list.

`replay(call)` makes the same call on real, never-read CPU tensors with the Triton backend: inside
`bench.aot.capture()` that records the kernel specializations the call launches on a GPU.

Limits: autocast is CPU autocast (CUDA autocast and the CUDA autograd engine need a GPU); it casts the
convolutions before the fused ops to the low-precision dtype and leaves batch norm's parameters fp32 as
CUDA autocast does. Strides come from the fake (meta) kernels, so a gradient layout that a CUDA kernel
would choose differently (e.g. the GAP backward's, NCHW here, reaching the last DDA block of a
channels_last model) is compiled as the meta kernels give it. Partial last batches (any N < 48) are
not traced; batches 48, 32 and 1 are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import ddakern.ops  # noqa: F401  (registers the ddakern:: ops)

AMP = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}
DTYPES = {v: k for k, v in DTYPE_NAMES.items()}
DDA_MODELS = ("resnet18_dda", "resnet34_dda", "resnet50_dda", "resnet101_dda")


@dataclass(frozen=True)
class Run:
    """One way the models are run: training step, evaluation, prediction or Grad-CAM."""

    model: str
    amp: str  # "fp32" (no autocast), "bf16", "fp16"
    channels_last: bool
    mode: str  # "train" (train mode, backward), "eval" (eval mode, no grad), "gradcam" (eval mode, backward)
    batch: int = 48
    image_size: int = 224

    def __str__(self) -> str:
        layout = "nhwc" if self.channels_last else "nchw"
        return f"{self.model} {self.mode} {self.amp} {layout} batch {self.batch}"


def runs(models: tuple[str, ...] = DDA_MODELS, batch: int = 48) -> list[Run]:
    """What the project launches: training and evaluation (fp32 / bf16 / fp16 autocast, NCHW and
    channels_last, batch `batch`), prediction (fp32, NCHW, batches of 32 and a single face) and
    Grad-CAM (fp32, eval mode with a backward, one face)."""
    out = []
    for model in models:
        for mode in ("train", "eval"):
            out += [Run(model, amp, cl, mode, batch) for amp in AMP for cl in (False, True)]
        out += [Run(model, "fp32", False, "eval", 32), Run(model, "fp32", False, "eval", 1)]
        out.append(Run(model, "fp32", False, "gradcam", 1))
    return out


TensorSpec = tuple[str, tuple[int, ...], tuple[int, ...], int, str]  # ("tensor", shape, stride, offset, dtype)


@dataclass(frozen=True)
class Call:
    """One ddakern:: op call: the op's name and its arguments, tensors as TensorSpec (backend left out)."""

    op: str
    args: tuple[Any, ...]

    def __str__(self) -> str:
        parts = []
        for a in self.args:
            if isinstance(a, tuple) and a and a[0] == "tensor":
                parts.append("x".join(map(str, a[1])) + f":{a[4]}" + (":nhwc" if _nhwc(a) else ""))
            else:
                parts.append(repr(a))
        return f"{self.op}({', '.join(parts)})"

    def to_json(self) -> list:
        return [self.op, [list(map(_listify, a)) if isinstance(a, tuple) else a for a in self.args]]

    @staticmethod
    def from_json(item: list) -> Call:
        op, args = item
        return Call(op, tuple(_spec(a) if isinstance(a, list) else a for a in args))


def _listify(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _spec(a: list) -> TensorSpec:
    return ("tensor", tuple(a[1]), tuple(a[2]), int(a[3]), str(a[4]))


def _nhwc(spec: TensorSpec) -> bool:
    shape, stride = spec[1], spec[2]
    return len(shape) == 4 and stride[1] == 1 and shape[1] > 1 and stride[3] != 1


def describe(a: Any) -> Any:
    """A TensorSpec for a tensor (fake or real), the value itself otherwise."""
    if isinstance(a, torch.Tensor):
        return ("tensor", tuple(a.shape), tuple(a.stride()), int(a.storage_offset()), DTYPE_NAMES[a.dtype])
    return a


class _Recorder(TorchDispatchMode):
    """Records every ddakern:: op that reaches the dispatcher (forward ops and the backward ops autograd calls)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func.namespace == "ddakern":
            bound = func._schema.arguments
            names = [a.name for a in bound]
            values = list(args) + [kwargs[n] for n in names[len(args) :] if kwargs and n in kwargs]
            call_args = tuple(describe(v) for n, v in zip(names, values, strict=False) if n != "backend")
            self.calls.append(Call(func._opname, call_args))
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def recording() -> Iterator[list[Call]]:
    """Fake tensors (CPU), the fused ops on (the torch backend's fakes), and a list that collects every
    ddakern:: call made inside the block."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from ddakern.dispatch import use_ops_backend

    with FakeTensorMode(), use_ops_backend("torch"), _Recorder() as rec:
        yield rec.calls


def trace(run: Run) -> list[Call]:
    """The ddakern:: op calls one run of `run.model` makes (fake tensors, so any size costs the same)."""
    from ddakern.models.registry import create

    dtype = AMP[run.amp]
    fmt = torch.channels_last if run.channels_last else torch.contiguous_format
    with torch.device("meta"):  # instant: parameters without memory (FakeTensor parameters cannot be converted)
        model = create(run.model, fused_ops=True).to(memory_format=fmt)
    model.train(run.mode == "train")
    with recording() as calls:
        for module in model.modules():  # the same parameters and buffers as fake CPU tensors
            for table in (module._parameters, module._buffers):
                for name, t in table.items():
                    if t is not None:
                        fake = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype)
                        table[name] = fake.requires_grad_(t.requires_grad)
        x = torch.randn(run.batch, 3, run.image_size, run.image_size).contiguous(memory_format=fmt)
        y = torch.zeros(run.batch, dtype=torch.int64)
        amp = torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with torch.set_grad_enabled(run.mode != "eval"):
            with amp:
                logits = model(x)
            if run.mode != "eval":
                F.cross_entropy(logits.float(), y).backward()  # the engine's loss (Grad-CAM: one logit)
    return calls


def unique_calls(runs_: list[Run]) -> tuple[list[Call], dict[Call, list[str]]]:
    """The distinct calls of all runs in first-seen order, and the runs that make each."""
    where: dict[Call, list[str]] = {}
    for run in runs_:
        for call in trace(run):
            where.setdefault(call, [])
            if str(run) not in where[call]:
                where[call].append(str(run))
    return list(where), where


def _tensor(spec: TensorSpec) -> torch.Tensor:
    """A real CPU tensor with the spec's shape, strides, storage offset and dtype (memory never read)."""
    _, shape, stride, offset, dtype = spec
    extent = 1 + sum((s - 1) * st for s, st in zip(shape, stride, strict=True)) if all(shape) else 0
    return torch.empty(offset + extent, dtype=DTYPES[dtype]).as_strided(shape, stride, offset)


def replay(call: Call) -> None:
    """Make `call` on real CPU tensors with the Triton backend (inside bench.aot.capture: nothing runs)."""
    op = getattr(torch.ops.ddakern, call.op)
    args = [_tensor(a) if isinstance(a, tuple) and a and a[0] == "tensor" else a for a in call.args]
    op(*args, backend="triton")
