"""CUDA dry run without a GPU: the engine's training step, an evaluation batch and the predictor's
forward traced on fake CUDA tensors (see tests/fake_cuda.py) for every model, fused ops on/off,
channels_last on/off and every recompute mode.

Each trace fails on a tensor on the wrong device (fake tensors raise on a CPU/CUDA mix, the Python
autograd engine on a gradient for another device, and the end state is checked) and on any
host-device sync inside the step (SyncCounter, strict): a host read of a CUDA value, a copy between
host and device, an op whose output size depends on the data.

Cost: tracing is ~0.5-1 s of CPU per training step, most of it in fake-tensor dispatch. The full
flag product (fused x channels_last x recompute, 12 steps) runs on resnet18_dda, the cheapest DDA
model; every other model runs once with every flag on (fused ops where it has DDA blocks,
channels_last) and a recompute mode, the modes alternating over the models so that each block kind
(basic, bottleneck, VGG, DDA) meets both "dda" and "all". SGD steps them (cheapest to trace); each
optimiser the engine offers is traced once on vgg11_bn.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib.util
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from fake_cuda import HostDeviceSync, SyncCounter, fake_cuda_, python_autograd
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from ddakern import dispatch
from ddakern.inference.backends import class_probabilities
from ddakern.models import create, list_models
from ddakern.ops import registry
from train.config import Config
from train.distributed import DistEnv
from train.engine import Trainer
from train.evaluate import _score_plain, _score_views, add_batch

CUDA = torch.device("cuda", 0)
CLASSES = tuple("abcdefg")
BATCH, SIZE = 2, 64
FULL = "resnet18_dda"
RECOMPUTE = ("none", "dda", "all")


def _combos() -> list[tuple[str, bool, bool, str]]:
    """(model, fused ops, channels_last, recompute): the full product on FULL, the others once each."""
    full = [(FULL, f, cl, rc) for f in (False, True) for cl in (False, True) for rc in RECOMPUTE]
    others = [m for m in list_models() if m != FULL]
    return full + [(m, m.endswith("_dda"), True, ("dda", "all")[i % 2]) for i, m in enumerate(others)]


COMBOS = _combos()


@dataclasses.dataclass
class Setup:
    """A Trainer over a fake CUDA model, fake CUDA batches and the fake mode they belong to."""

    mode: FakeTensorMode
    trainer: Trainer
    x: torch.Tensor
    y: torch.Tensor


_SETUPS: dict[tuple, Setup] = {}
_MODE = FakeTensorMode()
"""One fake mode for the module: its dispatch cache then serves every model of the same shapes."""


def setup(model: str, fused: bool, channels_last: bool, recompute: str, optimizer: str = "sgd") -> Setup:
    """Built once per module and key: on the meta device, then every tensor replaced by a fake CUDA one."""
    key = (model, fused, channels_last, recompute, optimizer)
    if key not in _SETUPS:
        with torch.device("meta"):
            net = create(model, num_classes=len(CLASSES), fused_ops=fused, recompute=recompute)
        if channels_last:  # prepare_model's net.to(memory_format=...) cannot swap parameters under fake mode
            net.to(memory_format=torch.channels_last)
        cfg = Config(model=model, fused_ops=fused, recompute=recompute, optimizer=optimizer, class_weighted=True)
        mode = _MODE
        with mode:
            fake_cuda_(net)
            env = DistEnv(rank=0, world_size=1, local_rank=0, device=CUDA)
            trainer = Trainer(cfg, env, net, CLASSES, {"train": []}, None, np.arange(len(CLASSES)))
            trainer.cfg = dataclasses.replace(cfg, channels_last=channels_last)  # (see above: done on meta)
            x = torch.randn(BATCH, 3, SIZE, SIZE, device=CUDA)
            y = torch.randint(0, len(CLASSES), (BATCH,), device=CUDA)
        _SETUPS[key] = Setup(mode, trainer, x, y)
    return _SETUPS[key]


@pytest.fixture(autouse=True)
def _no_triton_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake CUDA tensors must reach the fused ops' fake implementations, never a Triton launcher."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"a Triton launcher ({name}) was loaded for fake CUDA tensors")

    for spec in registry.ops():
        monkeypatch.setattr(sys.modules[spec.fused.__module__], "triton_kernels", refuse)


def _fused_calls(counter: SyncCounter) -> int:
    return sum(n for op, n in counter.ops.items() if op.startswith("ddakern."))


def _batch_norms(counter: SyncCounter) -> int:
    return sum(n for op, n in counter.ops.items() if "batch_norm" in op and "backward" not in op)


def _assert_on_cuda(tensors: dict[str, Any]) -> None:
    wrong = {k: t.device for k, t in tensors.items() if isinstance(t, torch.Tensor) and t.device != CUDA}
    assert not wrong, f"tensors off the model's device: {wrong}"


@pytest.mark.parametrize("model,fused,channels_last,recompute", COMBOS)
def test_training_step(model: str, fused: bool, channels_last: bool, recompute: str) -> None:
    """Trainer._step (forward, loss, backward, optimiser step, step sums) on fake CUDA: no sync, all on CUDA."""
    s = setup(model, fused, channels_last, recompute)
    counter = SyncCounter(strict=True)
    with s.mode, python_autograd(), counter:
        sums = s.trainer._step(s.x, s.y)
    assert counter.syncs == []
    net, opt = s.trainer.net, s.trainer.optimizer
    _assert_on_cuda({"sums": sums, "first_bad": s.trainer._first_bad} | dict(net.named_buffers()))
    _assert_on_cuda(dict(net.named_parameters()) | {f"{n}.grad": p.grad for n, p in net.named_parameters()})
    assert all(p.grad is not None for p in net.parameters()), "a parameter got no gradient"
    _assert_on_cuda({f"{i}.{k}": v for i, st in enumerate(opt.state.values()) for k, v in st.items() if k != "step"})
    assert sums.shape == (3,) and sums.dtype == torch.float64
    # the traced step went where the flags say: fused ops on DDA models only, recomputation when asked
    assert (_fused_calls(counter) > 0) == fused
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert (_batch_norms(counter) > n_bn) == (recompute != "none")


@pytest.mark.parametrize("model,fused,channels_last,recompute", COMBOS)
def test_predictor_forward(model: str, fused: bool, channels_last: bool, recompute: str) -> None:
    """The predictor's model part (class_probabilities, in inference mode) on fake CUDA: the input
    upload is its only transfer; the probabilities stay on the device for the caller to read."""
    s = setup(model, fused, channels_last, recompute)
    net = s.trainer.net.eval()
    counter = SyncCounter(strict=False)
    with s.mode:
        x = torch.randn(BATCH, 3, SIZE, SIZE)  # preprocess() gives a CPU batch
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
    with s.mode, counter, torch.inference_mode():
        probs = class_probabilities(net, x, CUDA)
    assert counter.syncs == [f"non-blocking copy cpu -> {CUDA} (aten.to)"]
    assert probs.device == CUDA and probs.shape == (BATCH, len(CLASSES))
    assert (_fused_calls(counter) > 0) == fused


@pytest.mark.parametrize("tta", [False, True], ids=["plain", "tta"])
def test_evaluation_batch(tta: bool) -> None:
    """train.evaluate's per-batch work (scoring, loss sum, confusion counts) on fake CUDA: no sync."""
    s = setup(FULL, True, True, "dda")
    net = s.trainer.net.eval()
    score = (_score_views if tta else _score_plain)(net, contextlib.nullcontext, True)
    with s.mode:
        x = torch.stack([s.x, s.x]) if tta else s.x
        loss_sum = torch.zeros((), dtype=torch.float64, device=CUDA)
        confusion = torch.zeros(len(CLASSES) ** 2, dtype=torch.int64, device=CUDA)
    counter = SyncCounter(strict=True)
    with s.mode, counter, torch.no_grad():
        add_batch(score, x, s.y, loss_sum, confusion, len(CLASSES))
    assert counter.syncs == []
    _assert_on_cuda({"loss_sum": loss_sum, "confusion": confusion})


@pytest.mark.parametrize("optimizer", ["radam", "adam", "adamw"])
def test_each_optimizer(optimizer: str) -> None:
    """Every optimiser the engine builds (sgd: test_training_step) steps on fake CUDA without a sync."""
    s = setup("vgg11_bn", False, False, "none", optimizer)
    with s.mode, python_autograd(), SyncCounter(strict=True):
        s.trainer._step(s.x, s.y)
        s.trainer._step(s.x, s.y)  # the second step runs on the state the first created
    opt = s.trainer.optimizer
    _assert_on_cuda({f"{i}.{k}": v for i, st in enumerate(opt.state.values()) for k, v in st.items() if k != "step"})


def test_fused_ops_pick_triton_for_cuda() -> None:
    """On fake CUDA tensors "auto" resolves to the Triton backend, so the fused ops' fake implementations
    stand in for the kernels a GPU would launch (no launcher is loaded: see _no_triton_launch)."""
    s = setup(FULL, True, False, "none")
    backends: list[str] = []

    class Backends(SyncCounter):
        def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            if str(func.overloadpacket).startswith("ddakern."):
                backends.append(args[-1])
            return super().__torch_dispatch__(func, types, args, kwargs)

    want = "triton" if importlib.util.find_spec("triton") is not None else "torch"
    with s.mode:
        assert dispatch.backend_for(s.x) == want
        with Backends(strict=True), torch.no_grad():
            s.trainer.net.eval()(s.x)
    assert backends and set(backends) == {want}


def test_a_sync_in_the_step_fails() -> None:
    """The counter catches each kind of sync the step must not contain (the test above would fail on it)."""
    s = setup("vgg11_bn", False, False, "none")
    syncs = {
        "item": lambda t: t.sum().item(),
        "float": lambda t: float(t.sum()),
        "tolist": lambda t: t[0, 0, 0, :2].tolist(),
        "if": lambda t: bool(t.sum() > 0),
        "host tensor": lambda t: torch.tensor(2.0, device=t.device),
        "to cpu": lambda t: t.sum().cpu(),
        "bincount": lambda t: torch.bincount(t.flatten().long()),
    }
    for name, fn in syncs.items():
        with s.mode, pytest.raises(HostDeviceSync), SyncCounter(strict=True):
            fn(s.x)
            pytest.fail(f"{name}: not caught")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny real computations: one intra-op thread (no worker spin on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("recompute", ["dda", "all"])
def test_python_engine_matches_autograd(recompute: str, one_thread: None) -> None:
    """The Python autograd engine the dry run backpropagates with gives the C++ engine's gradients
    (real CPU tensors; fused ops through their torch.library autograd, checkpointed regions)."""
    base = create(FULL, num_classes=len(CLASSES), dda_stages=(4,), fused_ops=True, width=16, spatial_width=16)
    base.double().set_grad_checkpointing(recompute)  # float64: only the summation order may differ
    x, y = torch.randn(4, 3, 32, 32, dtype=torch.float64), torch.randint(0, len(CLASSES), (4,))
    grads = []
    for engine in (contextlib.nullcontext, python_autograd):
        net = copy.deepcopy(base).train()
        torch.manual_seed(1)  # the same dropout masks
        with dispatch.use_ops_backend("torch"), engine():
            torch.nn.functional.cross_entropy(net(x), y).backward()
        grads.append({n: p.grad for n, p in net.named_parameters()} | dict(net.named_buffers()))
    cpp, python = grads
    assert cpp.keys() == python.keys() and all(v is not None for v in python.values())
    for name in cpp:
        torch.testing.assert_close(python[name], cpp[name], rtol=1e-9, atol=1e-12, msg=lambda m, n=name: f"{n}: {m}")


def test_python_engine_matches_autograd_and_refuses_what_it_does_not_run() -> None:
    """The dry runs' backward engine (fake_cuda.PythonEngine) gives the C++ engine's gradients on real
    tensors, and refuses (not silently mis-computes) torch.autograd.grad / create_graph."""
    x, w = torch.randn(3, 4, requires_grad=True), torch.randn(4, 2, requires_grad=True)
    loss = ((x @ w).relu() ** 2).sum() + torch.softmax(x, 1).square().sum()
    gx, gw = torch.autograd.grad(loss, (x, w), retain_graph=True)
    with python_autograd():
        with pytest.raises(NotImplementedError, match=r"plain \.backward\(\) only"):
            torch.autograd.grad(loss, x, retain_graph=True)
        loss.backward()
    torch.testing.assert_close(x.grad, gx)
    torch.testing.assert_close(w.grad, gw)
