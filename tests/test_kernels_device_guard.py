"""Every Triton launcher runs under its inputs' CUDA device guard (Triton launches on the current device).

No second GPU is needed: torch.cuda.device is replaced by a recorder that stops the launcher as soon as
the guard is entered, and the inputs are fake tensors on cuda:1 (torch's FakeTensorMode, no GPU).
A launcher without the guard gets past that point and fails otherwise, so the test fails.
"""

from __future__ import annotations

import inspect
import typing

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
    a tensor or a kernels.contract bundle of them first (a launcher; helpers such as forward_blocks take sizes)."""
    found = []
    for name in LAUNCHER_MODULES:
        mod = triton_kernels(name)
        for fname, fn in inspect.getmembers(mod, inspect.isfunction):
            params = list(inspect.signature(fn).parameters)
            first = typing.get_type_hints(fn).get(params[0]) if params else None
            takes_tensor = first is torch.Tensor or _is_bundle(first)
            if not fname.startswith("_") and fn.__module__ == mod.__name__ and takes_tensor:
                found.append((f"{name}.{fname}", fn))
    return found


def _is_bundle(ann: object) -> bool:
    """Whether `ann` is a NamedTuple type (a kernels.contract argument bundle)."""
    return isinstance(ann, type) and issubclass(ann, tuple) and hasattr(ann, "_fields")


def _value(ann: object, fake: FakeTensorMode, where: str) -> object:
    """A plausible argument for annotation `ann`: a fake CUDA tensor, True, 0.1, or a kernels.contract bundle
    of such values (its fields without a default)."""
    if _is_bundle(ann):
        hints = typing.get_type_hints(ann)
        return ann(*(_value(hints[f], fake, where) for f in ann._fields if f not in ann._field_defaults))
    if "Tensor" in str(ann):
        with fake:
            return torch.empty(2, 4, 3, 3, device=DEVICE)
    if ann is bool:
        return True
    if ann is float:
        return 0.1
    raise AssertionError(f"{where}: no test value for {ann}")


def _arguments(fn: object, fake: FakeTensorMode) -> list[object]:
    """Plausible positional arguments from the annotations (see _value)."""
    hints = typing.get_type_hints(fn)
    return [_value(hints[p], fake, f"{fn.__qualname__}({p})") for p in inspect.signature(fn).parameters]


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
