"""Running CUDA code paths without a GPU: fake CUDA modules, a Python autograd engine, a sync counter.

torch's fake tensors carry device "cuda" on a machine without one (a CUDA build of torch is enough):
every op runs its meta / fake implementation, mixing devices raises, and no kernel launches. Three
things are needed beyond FakeTensorMode to trace a whole training step that way:

- `fake_cuda_(module)`: `module.to("cuda")` fails under fake mode (its parameters are swapped), so
  each parameter and buffer is replaced by a fake CUDA tensor of the same shape, dtype and strides.
- `python_autograd()`: the C++ autograd engine asks the CUDA driver for the devices' streams before
  it runs any backward node ("hasPrimaryContext expects a valid device index"). This engine walks the
  same graph in Python instead and calls every real backward node (C++ nodes, autograd.Function and
  torch.library ops, checkpoint recomputation through its saved-tensor hooks), checking and reducing
  each gradient against the receiving node's input metadata as the C++ engine's validate_outputs does.
- `SyncCounter`: a dispatch mode that records every host-device sync an op would cause on CUDA:
  reading a CUDA value on the host (`.item()`, `float(t)`, `.tolist()`, `if t:`), a copy between
  host and device memory, and ops whose output size depends on the data (nonzero, bincount, boolean
  masks), which fake tensors cannot size. `strict=True` raises at the first one, so the traceback
  names the line that syncs.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException
from torch.autograd.function import BackwardCFunction
from torch.autograd.variable import Variable
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.checkpoint import GraphExecGroup

aten = torch.ops.aten
_COPIES = (aten.to, aten._to_copy, aten.copy_, aten.copy, aten._copy_from)
"""Ops that copy between devices (aten.to reaches dispatch modes as itself under inference mode)."""


def fake_cuda_(module: nn.Module) -> nn.Module:
    """Replace every parameter and buffer of `module` (in place) by a CUDA tensor of the same shape,
    dtype and strides; call under a FakeTensorMode. Works from a model built on the meta device."""
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                t = torch.empty_strided(p.shape, p.stride(), dtype=p.dtype, device="cuda")
                m._parameters[name] = nn.Parameter(t, requires_grad=p.requires_grad)
        for name, b in list(m._buffers.items()):
            if b is not None:
                m._buffers[name] = torch.empty_strided(b.shape, b.stride(), dtype=b.dtype, device="cuda")
    return module


class PythonEngine:
    """`torch.autograd.backward` without the C++ engine: dependency-counted walk of the graph."""

    def run_backward(
        self,
        outputs: Sequence[torch.Tensor],
        grad_outputs: Sequence[torch.Tensor],
        keep_graph: bool,
        create_graph: bool,
        inputs: Sequence[torch.Tensor] = (),
        allow_unreachable: bool = True,
        accumulate_grad: bool = True,
    ) -> tuple:
        if create_graph or inputs or not accumulate_grad:
            raise NotImplementedError("PythonEngine runs plain .backward() only")
        buffers: dict[Any, list[torch.Tensor | None]] = {}
        roots = []
        for t, g in zip(outputs, grad_outputs):
            buffers.setdefault(t.grad_fn, [None] * len(t.grad_fn._input_metadata))[t.output_nr] = g
            roots.append(t.grad_fn)
        deps: collections.Counter = collections.Counter()
        seen, stack = set(roots), list(roots)
        while stack:
            for nxt, _ in stack.pop().next_functions:
                if nxt is not None:
                    deps[nxt] += 1
                    if nxt not in seen:
                        seen.add(nxt)
                        stack.append(nxt)
        ready = collections.deque(n for n in dict.fromkeys(roots) if deps[n] == 0)
        # one graph task: each checkpointed region recomputes once (outside the C++ engine, checkpoint
        # would take every unpack for a new backward call)
        with torch.no_grad(), GraphExecGroup():
            while ready:
                node = ready.popleft()
                grads = buffers.pop(node, [])
                if type(node).__name__ == "AccumulateGrad":
                    if grads and grads[0] is not None:
                        v = node.variable
                        v.grad = grads[0] if v.grad is None else v.grad + grads[0]
                    continue
                for (nxt, nr), g in zip(node.next_functions, self._call(node, grads)):
                    if nxt is None:
                        continue
                    if g is not None:
                        g = self._validate(node, nxt, nr, g)
                        buf = buffers.setdefault(nxt, [None] * len(nxt._input_metadata))
                        buf[nr] = g if buf[nr] is None else buf[nr] + g
                    deps[nxt] -= 1
                    if deps[nxt] == 0:
                        ready.append(nxt)
        return ()

    @staticmethod
    def _call(node: Any, grads: list[torch.Tensor | None]) -> tuple:
        if isinstance(node, BackwardCFunction):  # autograd.Function: materialise missing grads, as PyNode does
            meta = node._input_metadata
            zeros = [torch.zeros(m.shape, dtype=m.dtype, device=m.device) for m in meta]
            grads = [z if g is None else g for g, z in zip(grads, zeros)]
            out = node.apply(*grads)
        else:
            out = node(*grads)
        return out if isinstance(out, tuple) else (out,)

    @staticmethod
    def _validate(node: Any, nxt: Any, nr: int, g: torch.Tensor) -> torch.Tensor:
        meta = nxt._input_metadata[nr]
        if g.device != meta.device:
            raise RuntimeError(
                f"{type(node).__name__} sends a gradient on {g.device} to {type(nxt).__name__}, "
                f"which expects {meta.device}"
            )
        if tuple(g.shape) != tuple(meta.shape):
            g = g.sum_to_size(meta.shape)
        return g if g.dtype == meta.dtype else g.to(meta.dtype)


@contextlib.contextmanager
def python_autograd() -> Iterator[None]:
    """`.backward()` runs on PythonEngine inside the block."""
    previous = Variable._execution_engine
    Variable._execution_engine = PythonEngine()
    try:
        yield
    finally:
        Variable._execution_engine = previous


class HostDeviceSync(AssertionError):
    """An op that would make the host wait for the device (SyncCounter(strict=True))."""


class SyncCounter(TorchDispatchMode):
    """Records (or with `strict`, raises at) every op that would sync host and device on CUDA.

    Enter it inside the FakeTensorMode. `ops` counts every op seen (by overload packet name);
    `syncs` lists the syncing ones. Non-strict, a host read of a CUDA value returns 0 so that the
    trace goes on and every sync of the step is counted.
    """

    def __init__(self, strict: bool = True) -> None:
        super().__init__()
        self.strict = strict
        self.syncs: list[str] = []
        self.ops: collections.Counter = collections.Counter()

    def _sync(self, what: str) -> None:
        self.syncs.append(what)
        if self.strict:
            raise HostDeviceSync(f"host-device sync: {what}")

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        self.ops[str(func.overloadpacket)] += 1
        if func is aten._local_scalar_dense.default and args[0].is_cuda:
            self._sync(f"host read of a CUDA value ({func})")
            return 0
        if func.overloadpacket in _COPIES:
            named = {a.name: v for a, v in zip(func._schema.arguments, args)} | kwargs
            out = func(*args, **kwargs)
            src, dst = (named["src"], named["self"]) if "src" in named else (named["self"], out)
            if src.device.type != dst.device.type:
                blocking = "non-blocking" if named.get("non_blocking") else "blocking"
                self._sync(f"{blocking} copy {src.device} -> {dst.device} ({func.overloadpacket})")
            return out
        try:
            return func(*args, **kwargs)
        except (DataDependentOutputException, DynamicOutputShapeException):
            self._sync(f"output depends on the data ({func})")
            raise
