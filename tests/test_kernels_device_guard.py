"""Every Triton launcher runs under its inputs' CUDA device guard (Triton launches on the current device).

No second GPU is needed: torch.cuda.device is replaced by a recorder that stops the launcher as soon as
the guard is entered, and the inputs are fake tensors on cuda:1 (torch's FakeTensorMode, no GPU).
A launcher without the guard gets past that point and fails otherwise, so the test fails.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from ddakern.ops import registry
from ddakern.ops._common import triton_kernels

LAUNCHER_MODULES = registry.names()  # each registered op's kernels module
DEVICE = torch.device("cuda:1")


class _GuardEntered(Exception):
    """Raised by the recording torch.cuda.device: the launcher reached its device guard."""


def launchers() -> list[tuple[str, object]]:
    """(qualified name, function) of every public function defined in the kernels' launcher modules that takes
    a tensor first (a launcher; helpers such as forward_blocks take sizes)."""
    found = []
    for name in LAUNCHER_MODULES:
        mod = triton_kernels(name)
        for fname, fn in inspect.getmembers(mod, inspect.isfunction):
            params = list(inspect.signature(fn).parameters.values())
            takes_tensor = bool(params) and "Tensor" in str(params[0].annotation)
            if not fname.startswith("_") and fn.__module__ == mod.__name__ and takes_tensor:
                found.append((f"{name}.{fname}", fn))
    return found


def _arguments(fn: object, fake: FakeTensorMode) -> list[object]:
    """Plausible positional arguments from the annotations: fake CUDA tensors, True, 0.1."""
    args = []
    for p in inspect.signature(fn).parameters.values():
        ann = str(p.annotation)
        if "Tensor" in ann:
            with fake:
                args.append(torch.empty(2, 4, 3, 3, device=DEVICE))
        elif ann == "bool":
            args.append(True)
        elif ann == "float":
            args.append(0.1)
        else:
            raise AssertionError(f"{fn.__qualname__}: no test value for parameter {p.name}: {ann}")
    return args


def test_every_launcher_is_found():
    names = {n for n, _ in launchers()}
    want = {"attention_residual.bn_stats", "attention_residual.forward", "attention_residual.backward"}
    want |= {"channel_attention.forward", "channel_attention.backward"}
    assert want <= names, names


@pytest.mark.parametrize("name, fn", launchers(), ids=[n for n, _ in launchers()])
def test_launcher_enters_the_inputs_device_guard(name, fn, monkeypatch):
    calls: list[torch.device] = []

    def recording_device(device: torch.device) -> None:
        calls.append(torch.device(device))
        raise _GuardEntered

    fake = FakeTensorMode()
    args = _arguments(fn, fake)
    monkeypatch.setattr(torch.cuda, "device", recording_device)
    with pytest.raises(_GuardEntered):
        fn(*args)
    assert calls == [DEVICE], f"{name}: device guard entered with {calls}"


def test_guard_is_a_no_op_on_cpu(monkeypatch):
    common = triton_kernels("_common")

    def no_cuda(device: torch.device) -> None:
        raise AssertionError("torch.cuda.device used for a CPU tensor")

    monkeypatch.setattr(torch.cuda, "device", no_cuda)
    with common.device_guard(torch.zeros(1)):
        pass
