"""Backend selection (ddakern.dispatch), torch.library registration, compile / export and import hygiene."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ddakern import dispatch
from ddakern import functional as DF
from ddakern.dispatch import current_mode, use_kernels, use_ops_backend

ROOT = Path(__file__).resolve().parents[1]


def test_use_kernels_global_and_context_manager():
    assert current_mode() == "auto"
    with use_ops_backend("reference"):
        assert current_mode() == "reference"
        with use_ops_backend("torch"):
            assert current_mode() == "torch"
        assert current_mode() == "reference"
    assert current_mode() == "auto"
    use_ops_backend("torch")
    try:
        assert current_mode() == "torch"
    finally:
        use_ops_backend("auto")
    assert current_mode() == "auto"


def test_context_manager_restores_after_error():
    with pytest.raises(RuntimeError, match="boom"):
        with use_ops_backend("triton"):
            raise RuntimeError("boom")
    assert current_mode() == "auto"


def test_invalid_mode():
    with pytest.raises(ValueError, match="mode must be one of"):
        use_ops_backend("cuda")
    assert current_mode() == "auto"


def test_backend_resolution_on_cpu(monkeypatch):
    x = torch.randn(2, 3, 4, 4)
    assert dispatch.backend_for(x) == "reference"  # auto on CPU: small maps skip the custom-op overhead
    big = torch.randn(1, 4, 256, 256)
    assert dispatch.backend_for(big) == "torch" and dispatch.backend_for(big.bfloat16()) == "reference"
    if torch.cuda.is_available() and dispatch.triton_available():
        assert dispatch.backend_for(x.cuda()) == "triton"
        assert dispatch.backend_for(x.cuda().double()) == "torch"
    with use_ops_backend("reference"):
        assert dispatch.backend_for(x) == "reference"
    with use_ops_backend("triton"):
        if dispatch.triton_interpreting():  # conftest sets TRITON_INTERPRET=1 when there is no GPU
            assert dispatch.backend_for(x) == "triton"
            with pytest.raises(TypeError, match="float64"):
                dispatch.backend_for(x.double())
        monkeypatch.setattr(dispatch, "TRITON_INTERPRETING", False)  # decided at import
        with pytest.raises(ValueError, match="needs CUDA tensors"):
            DF.channel_attention(x, torch.randn(2, 3))


def _untraceable(fn):
    """fn behind a wrapper the compiler cannot trace (as torch 2.11's dynamo treats importlib.util.find_spec)."""

    @torch._dynamo.disable
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


def test_dispatch_decided_at_import(monkeypatch):
    """backend_for neither looks triton up nor reads TRITON_INTERPRET: both were decided at import."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    def no_lookup(*args, **kwargs):
        raise AssertionError("importlib.util.find_spec called while dispatching")

    available, interpreting = dispatch.triton_available(), dispatch.triton_interpreting()
    with FakeTensorMode():
        x = torch.empty(2, 3, 4, 4, device="cuda")  # a fake CUDA tensor: no GPU needed
    assert x.is_cuda
    monkeypatch.setattr("importlib.util.find_spec", no_lookup)
    assert dispatch.backend_for(x) == ("triton" if available else "torch")
    if available:
        with use_ops_backend("triton"):
            assert dispatch.backend_for(x) == "triton"
    if interpreting:  # an environment change after import does not flip the decision
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with use_ops_backend("triton"):
            assert dispatch.backend_for(torch.randn(2, 3, 4, 4)) == "triton"


def _fused_pair(x, logits, w, b, a):
    y = DF.attention_residual(x, logits, w, b, None, None, True)
    return DF.channel_attention(y, a, None, residual=True)


@pytest.mark.parametrize("mode", ["auto", "reference", "torch", "triton"])
def test_compile_fullgraph_in_every_mode(mode, monkeypatch):
    """The fused ops trace as one graph in every backend mode, even where importlib.util.find_spec
    cannot be traced (torch 2.11): dispatch must not call it."""
    usable = dispatch.triton_available() and (torch.cuda.is_available() or dispatch.triton_interpreting())
    if mode == "triton" and not usable:
        pytest.skip("triton backend unavailable here")

    # only dispatch's view of importlib: the compiler itself calls find_spec
    untraceable = SimpleNamespace(util=SimpleNamespace(find_spec=_untraceable(importlib.util.find_spec)))
    monkeypatch.setattr(dispatch, "importlib", untraceable)
    torch._dynamo.reset()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    n, c = 2, 4
    x, logits = torch.randn(n, c, 3, 3, device=dev), torch.randn(n, c, 3, 3, device=dev)
    w, b, a = torch.rand(c, device=dev) + 0.5, torch.randn(c, device=dev), torch.randn(n, c, device=dev)
    with use_ops_backend(mode):
        got = torch.compile(_fused_pair, fullgraph=True, backend="eager")(x, logits, w, b, a)
        want = _fused_pair(x, logits, w, b, a)
    torch.testing.assert_close(got, want)
    torch._dynamo.reset()


def _grad_fn_names(y: torch.Tensor) -> set[str]:
    names, todo = set(), [y.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is not None:
            names.add(type(fn).__name__)
            todo.extend(f for f, _ in fn.next_functions)
    return names


def test_modes_build_different_graphs():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    w, b = torch.ones(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    with use_ops_backend("reference"):
        ref = DF.attention_residual(x, logits, w, b, None, None, True)
    with use_ops_backend("torch"):
        fused = DF.attention_residual(x, logits, w, b, None, None, True)
    assert "SoftmaxBackward0" in _grad_fn_names(ref)
    assert "SoftmaxBackward0" not in _grad_fn_names(fused)
    torch.testing.assert_close(fused, ref)


def test_ops_registered_with_torch_library():
    for name in ("bn_stats", "attention_residual", "attention_residual_backward", "channel_attention",
                 "channel_attention_backward"):  # fmt: skip
        assert hasattr(torch.ops.ddakern, name)

    def written(op):
        return {a.name for a in op.default._schema.arguments if a.alias_info is not None and a.alias_info.is_write}

    assert written(torch.ops.ddakern.bn_stats) == {"running_mean", "running_var"}
    assert written(torch.ops.ddakern.attention_residual) == set()
    assert written(torch.ops.ddakern.channel_attention) == set()


class _TwoOps(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(c)
        with torch.no_grad():
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.3, 0.3)

    def forward(self, x, logits, a, scale):
        bn = self.bn
        y = DF.attention_residual(x, logits, bn.weight, bn.bias, bn.running_mean, bn.running_var, self.training)
        return DF.channel_attention(torch.relu(y), a, scale, residual=True)


def _clone_inputs(inputs):
    return [t.detach().clone().requires_grad_() for t in inputs]


def test_compile_fullgraph_and_export_torch_backend():
    """torch.compile(fullgraph=True) (forward + backward, running-stat mutation) and torch.export."""
    torch._dynamo.reset()
    n, c, h, w = 2, 8, 5, 5
    inputs = [torch.randn(n, c, h, w), torch.randn(n, c, h, w), torch.randn(n, c), torch.rand(n, c) + 0.5]
    eager, compiled = _TwoOps(c), _TwoOps(c)
    compiled.load_state_dict(eager.state_dict())
    fn = torch.compile(compiled, fullgraph=True, backend="inductor")
    with use_ops_backend("torch"):
        results = []
        for model in (eager, fn):
            ins = _clone_inputs(inputs)
            out = model(*ins)
            out.backward(torch.ones_like(out))
            results.append((out, *[t.grad for t in ins], model.bn.weight.grad))
        for a, b in zip(*results, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(compiled.bn.running_mean, eager.bn.running_mean)
        torch.testing.assert_close(compiled.bn.running_var, eager.bn.running_var)

        exported = torch.export.export(eager, tuple(inputs))
        ops = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
        assert {"ddakern.bn_stats.default", "ddakern.attention_residual.default"} <= ops
        assert "ddakern.channel_attention.default" in ops
        rm_before = eager.bn.running_mean.clone()
        got = exported.module()(*inputs)
        want = eager(*inputs)
        torch.testing.assert_close(got, want)
        assert not torch.equal(eager.bn.running_mean, rm_before)


def test_use_kernels_is_an_alias_of_use_ops_backend():
    import ddakern

    assert use_kernels is use_ops_backend and ddakern.use_kernels is ddakern.use_ops_backend
    with ddakern.use_kernels("reference"):
        assert current_mode() == "reference"
    assert current_mode() == "auto"


# triton: a None entry in sys.modules (torch probes it with find_spec, which must not raise);
# DALI: a meta_path finder that refuses nvidia.dali*
_BLOCKER = (
    "import sys\n"
    "sys.modules['triton'] = None\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.startswith('nvidia.dali'):\n"
    "            raise ImportError(f'blocked: {name}')\n"
    "sys.meta_path.insert(0, Block())\n"
)
_FORWARD = (
    "import torch, ddakern\n"
    "m = ddakern.models.create('resnet18_dda', width=16, fused_ops=True).train()\n"
    "y = m(torch.randn(2, 3, 32, 32)); y.sum().backward()\n"
    "assert y.shape == (2, 7) and bool(torch.isfinite(y).all())\n"
)
_FUNCTIONAL = (
    "import torch, ddakern.functional as F, ddakern.dispatch as d\n"
    "assert not d.triton_available()\n"
    "x = torch.randn(2, 3, 4, 4, requires_grad=True)\n"
    "y = F.attention_residual(x, torch.randn(2, 3, 4, 4), None, None, None, None, True)\n"
    "F.channel_attention(y, torch.randn(2, 3)).sum().backward()\n"
)


_NOTHING_BLOCKED_LOADED = (
    "loaded = {k for k, v in sys.modules.items() if v is not None}\n"
    "assert not any(k.startswith(('triton', 'nvidia.dali')) for k in loaded), sorted(loaded)\n"
    "launchers = {k for k in loaded if k.startswith(('kernels.', 'ddakern.kernels.'))\n"
    "             and k.rpartition('.')[2] not in ('layout', 'interpret', 'contract')}\n"
    "assert not launchers, sorted(launchers)\n"
)


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    full = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full, capture_output=True, text=True, timeout=300)


def test_import_and_forward_with_triton_and_dali_blocked():
    """Without triton (and DALI): `import ddakern`, the functional ops forward/backward and a fused model's
    training step work on CPU and import neither triton, DALI nor a kernel launcher module
    (one interpreter for both). Nor does `import ddakern` import torch._dynamo (1.7 s of every start)."""
    lean = "import ddakern\nassert 'torch._dynamo' not in sys.modules, 'import ddakern imports torch._dynamo'\n"
    res = _python(_BLOCKER + lean + _FUNCTIONAL + _FORWARD + _NOTHING_BLOCKED_LOADED)
    assert res.returncode == 0, res.stderr[-2000:]


def test_malformed_tuning_breaks_only_triton_launches():
    """A bad DDAKERN_TRITON_TUNING leaves import and the torch backend alone (a fresh process: the
    variable is in place before import); a Triton launch names the entry (below)."""
    res = _python("import sys\n" + _FORWARD, DDAKERN_TRITON_TUNING="tile=big")
    assert res.returncode == 0, res.stderr[-2000:]


def test_tuning_env_var_sets_the_gpu_budget_at_the_first_launch(monkeypatch):
    """Off the interpreter, the first launch reads DDAKERN_TRITON_TUNING over the GPU default; a bad entry
    is one line naming it (in the test process: tuning() reads the variable when the budget is first used)."""
    from ddakern.ops._common import triton_kernels

    kcommon = triton_kernels("_common")  # imports no triton
    monkeypatch.setattr(kcommon, "interpreting", lambda: False)

    def first_tuning(spec: str):
        monkeypatch.setenv(kcommon.TUNING_ENV, spec)
        monkeypatch.setattr(kcommon, "TUNING", None)  # as in a fresh process
        t = kcommon.tuning()
        return [t.tile, t.bwd_tile, t.num_warps]

    assert first_tuning("") == [4096, 2048, 8]
    assert first_tuning("tile=8192,num_warps=4") == [8192, 2048, 4]
    with pytest.raises(ValueError, match="DDAKERN_TRITON_TUNING: bad entry 'tile=big'"):
        first_tuning("tile=big")
