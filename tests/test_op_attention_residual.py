"""ddakern.functional.attention_residual against the autograd reference, on the torch and triton backends."""

from __future__ import annotations

import pytest
import torch
from op_tolerance import allowance_fraction
from torch import nn

from ddakern import functional as DF
from ddakern.dispatch import use_ops_backend
from ddakern.ops._common import mergeable, triton_kernels
from ddakern.ops.attention_residual import reference
from ddakern.profiling import saved_tensor_bytes

kcommon = triton_kernels("_common")  # the launchers' block-size budget (imports no triton)

HWS = [(1, 1), (7, 7), (13, 17)]
CS = [1, 3, 7, 64, 257]
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # CPU: triton via the interpreter
NAMES = ("out", "dx", "dlogits", "dweight", "dbias", "running_mean", "running_var")


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """Max abs error relative to the reference's max magnitude."""
    ref = ref.double()
    return ((a.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


def make_inputs(n, c, h, w, dtype=torch.float32, channels_last=False):
    x = torch.randn(n, c, h, w).to(DEVICE, dtype)
    logits = (torch.randn(n, c, h, w) * 2 + 0.3).to(DEVICE, dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
        logits = logits.to(memory_format=torch.channels_last)
    params = dict(
        weight=torch.randn(c) * 0.5 + 1,
        bias=torch.randn(c) * 0.5,
        running_mean=torch.randn(c) * 0.2,
        running_var=torch.rand(c) + 0.5,
    )
    return x, logits, {k: v.to(DEVICE) for k, v in params.items()}


def run(mode, x, logits, p, training, grad=None, momentum=0.1, running=True, param_dtype=None):
    """Forward + backward in `mode`; returns (out, dx, dlogits, dweight, dbias, rm, rv) and grad."""
    cast = (lambda t: t.to(param_dtype)) if param_dtype is not None else (lambda t: t)
    xs = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    ls = logits.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    w = cast(p["weight"]).clone().requires_grad_()
    b = cast(p["bias"]).clone().requires_grad_()
    rm = cast(p["running_mean"]).clone() if running else None
    rv = cast(p["running_var"]).clone() if running else None
    with use_ops_backend(mode):
        y = DF.attention_residual(xs, ls, w, b, rm, rv, training, momentum)
        if grad is None:
            grad = torch.randn_like(y)
        y.backward(grad)
    empty = torch.zeros(1, device=x.device)
    return (y, xs.grad, ls.grad, w.grad, b.grad, rm if running else empty, rv if running else empty), grad


def compare(mode, x, logits, p, training, tol=1e-5, always_fp64=False, **kw) -> dict[str, float]:
    """Every output within `tol` relative of the fp32 reference; where that reference is itself off
    from a float64 reference by more (ill-conditioned cancellation in the softmax or batch-norm
    backward), at most twice its error. Returns each output's error as a fraction of its allowance
    (allowance_fraction; with always_fp64 the float64 reference is run even when all are within tol)."""
    ref, g = run("reference", x, logits, p, training, **kw)
    got, _ = run(mode, x, logits, p, training, grad=g, **kw)
    if mergeable(x):  # else (H, W not mergeable) the fused ops write contiguous outputs
        assert got[0].stride() == ref[0].stride(), "output must keep the input memory format"
    ref64 = None
    fractions = {}
    for k, (name, a, r) in enumerate(zip(NAMES, got, ref, strict=True)):
        assert a.dtype == r.dtype, name
        err = rel_err(a, r)
        if err <= tol and not always_fp64:
            fractions[name] = allowance_fraction(err, tol, None, None)
            continue
        if ref64 is None:
            ref64, _ = run("reference", x.double(), logits.double(), p, training, grad=g.double(),
                           param_dtype=torch.float64, **kw)  # fmt: skip
        ours, theirs = rel_err(a, ref64[k]), rel_err(r, ref64[k])
        fractions[name] = allowance_fraction(err, tol, ours, theirs)
        if err <= tol:
            continue
        assert ours <= 2 * theirs, (
            f"{mode} {name}: error {err:.2e} vs fp32 reference; vs fp64 {ours:.2e} > 2 x {theirs:.2e}"
        )
    return fractions


@pytest.mark.parametrize("c", CS)
@pytest.mark.parametrize("hw", HWS)
@pytest.mark.parametrize("training", [True, False])
def test_torch_backend_matches_reference(c, hw, training):
    for n in (1, 2, 5):
        if training and n * hw[0] * hw[1] < 2:
            continue
        x, logits, p = make_inputs(n, c, *hw)
        compare("torch", x, logits, p, training)


TRITON_CASES = [
    # (n, c, h, w, training, channels_last)
    (2, 1, 7, 7, True, False),
    (2, 3, 1, 1, True, False),
    (1, 7, 13, 17, True, True),
    (5, 64, 1, 1, False, False),
    (2, 64, 7, 7, True, True),
    (2, 257, 7, 7, True, False),
    (1, 257, 13, 17, False, True),
]


@pytest.mark.parametrize("case", TRITON_CASES, ids=str)
def test_triton_backend_matches_reference(case):
    n, c, h, w, training, cl = case
    x, logits, p = make_inputs(n, c, h, w, channels_last=cl)
    compare("triton", x, logits, p, training)


@pytest.mark.parametrize("training", [True, False])
def test_triton_chunked_and_split_paths(training, monkeypatch):
    """Small tiles force the online-softmax channel loop and split batch-statistic reductions."""
    monkeypatch.setattr(kcommon, "TUNING", kcommon.Tuning(tile=64, max_block_c=8, target_programs=16, num_warps=4))
    x, logits, p = make_inputs(3, 19, 5, 7)
    compare("triton", x, logits, p, training)


@pytest.mark.parametrize("mode", ["torch", "triton"])
def test_non_contiguous_inputs(mode):
    n, c, h, w = 2, 6, 5, 7
    big = torch.randn(n, 2 * c, h, w, device=DEVICE)
    x = big[:, ::2]  # channel-strided view
    logits = torch.randn(n, c, w, h, device=DEVICE).transpose(2, 3)  # H and W not mergeable: copied internally
    _, _, p = make_inputs(n, c, h, w)
    compare(mode, x, logits, p, True)
    # an expanded (stride 0) upstream gradient
    xs = x.clone().requires_grad_()
    ls = logits.clone().requires_grad_()
    with use_ops_backend(mode):
        DF.attention_residual(xs, ls, p["weight"], p["bias"], None, None, True).sum().backward()
    xr = x.clone().requires_grad_()
    lr = logits.clone().requires_grad_()
    reference(xr, lr, p["weight"], p["bias"], None, None, True).sum().backward()
    assert rel_err(xs.grad, xr.grad) < 1e-5 and rel_err(ls.grad, lr.grad) < 1e-5


@pytest.mark.parametrize("mode", ["torch", "triton"])
def test_running_statistics_match_batchnorm2d(mode):
    n, c, h, w = 3, 5, 4, 6
    bn = nn.BatchNorm2d(c, momentum=0.3).to(DEVICE)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    rm, rv = bn.running_mean.clone(), bn.running_var.clone()
    with use_ops_backend(mode):
        for step in range(3):
            x = torch.randn(n, c, h, w, device=DEVICE)
            logits = torch.randn(n, c, h, w, device=DEVICE) * (step + 1) + step
            y = DF.attention_residual(x, logits, bn.weight, bn.bias, rm, rv, True, momentum=0.3)
            want = x * (1 + torch.softmax(torch.relu(bn(logits)), dim=1))
            assert rel_err(y, want) < 1e-5
            assert rel_err(rm, bn.running_mean) < 1e-6 and rel_err(rv, bn.running_var) < 1e-6
        bn.eval()
        y = DF.attention_residual(x, logits, bn.weight, bn.bias, rm, rv, False)
        assert rel_err(y, x * (1 + torch.softmax(torch.relu(bn(logits)), dim=1))) < 1e-5


@pytest.mark.parametrize("mode", ["torch", "triton"])
def test_batch_statistics_without_running_stats(mode):
    x, logits, p = make_inputs(2, 4, 3, 3)
    for training in (True, False):  # no running stats: batch statistics even in eval
        compare(mode, x, logits, p, training, running=False)


def lowp_errors(mode, dtype, n, c, h, w, training, channels_last=False) -> dict[str, float]:
    """x and logits in `dtype`, batch-norm parameters fp32 (as under AMP): every output's error against a
    float64 reference at most twice the error of the reference run in `dtype` (plus 1e-6). Returns each
    output's error as a fraction of that allowance."""
    x, logits, p = make_inputs(n, c, h, w, channels_last=channels_last)
    ref64, g = run("reference", x.double(), logits.double(), p, training, param_dtype=torch.float64)
    g = g.to(dtype)
    got, _ = run(mode, x.to(dtype), logits.to(dtype), p, training, grad=g)
    ref_lp, _ = run("reference", x.to(dtype), logits.to(dtype), p, training, grad=g)
    fractions = {}
    for name, a, r_lp, r64 in zip(NAMES[:5], got[:5], ref_lp[:5], ref64[:5], strict=True):
        assert a.dtype == r_lp.dtype, name
        ours, theirs = rel_err(a, r64), rel_err(r_lp, r64)
        fractions[name] = ours / (2 * theirs + 1e-6)
        assert ours <= 2 * theirs + 1e-6, f"{mode} {dtype} {name}: error {ours:.2e} > 2 x reference {theirs:.2e}"
    return fractions


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("training", [True, False])
def test_low_precision_torch(dtype, training):
    lowp_errors("torch", dtype, 4, 64, 13, 17, training)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_triton(dtype):
    lowp_errors("triton", dtype, 2, 16, 7, 7, True)


@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_float64_torch_backend(training):
    n, c, h, w = 2, 3, 2, 2
    x = torch.randn(n, c, h, w, dtype=torch.float64, requires_grad=True)
    logits = torch.randn(n, c, h, w, dtype=torch.float64, requires_grad=True)
    weight = (torch.rand(c, dtype=torch.float64) + 0.5).requires_grad_()
    bias = (torch.randn(c, dtype=torch.float64) * 0.3).requires_grad_()
    rm = torch.randn(c, dtype=torch.float64) * 0.1
    rv = torch.rand(c, dtype=torch.float64) + 0.5
    stats = (None, None) if training else (rm, rv)

    def fn(x, logits, weight, bias):
        return DF.attention_residual(x, logits, weight, bias, *stats, training)

    with use_ops_backend("torch"):
        assert torch.autograd.gradcheck(fn, (x, logits, weight, bias))


@pytest.mark.parametrize("training", [True, False])
def test_saved_bytes(training):
    n, c, h, w = 4, 16, 16, 16
    x = torch.randn(n, c, h, w, requires_grad=True)
    logits = torch.randn(n, c, h, w, requires_grad=True)
    weight = torch.randn(c, requires_grad=True)
    bias = torch.randn(c, requires_grad=True)
    args = (x, logits, weight, bias, torch.zeros(c), torch.ones(c))

    def fn(*a):
        return DF.attention_residual(*a, training)

    with use_ops_backend("reference"):
        ref_total = saved_tensor_bytes(fn, *args)
        ref_extra = saved_tensor_bytes(fn, *args, exclude_args=True)
    with use_ops_backend("torch"):
        fused_total = saved_tensor_bytes(fn, *args)
        fused_extra = saved_tensor_bytes(fn, *args, exclude_args=True)
    big = x.numel() * 4
    # fused keeps x, logits (inputs) + per-channel weight, bias, mean, rstd; the reference 5 full tensors
    assert fused_total == 2 * big + 4 * c * 4
    assert fused_total <= 0.4 * ref_total + 4 * c * 4
    assert fused_extra == 2 * c * 4  # beyond its inputs only mean and rstd
    assert fused_extra <= 0.4 * ref_extra


@pytest.mark.parametrize("mode", ["torch", "triton"])
@pytest.mark.parametrize("training", [True, False])
def test_only_some_inputs_require_grad(mode, training):
    x, logits, p = make_inputs(2, 5, 3, 4)
    for x_grad, l_grad in ((True, False), (False, True)):
        grads = []
        for m in ("reference", mode):
            xs, ls = x.clone().requires_grad_(x_grad), logits.clone().requires_grad_(l_grad)
            rm, rv = p["running_mean"].clone(), p["running_var"].clone()
            with use_ops_backend(m):
                y = DF.attention_residual(xs, ls, p["weight"], p["bias"], rm, rv, training)
            (y * y).sum().backward()
            grads.append((y, xs.grad if x_grad else ls.grad, rm, rv))
        for a, r in zip(*grads, strict=True):
            assert rel_err(a, r) < 1e-5


def test_errors():
    x, logits, p = make_inputs(2, 3, 4, 4)
    w, b, rm, rv = p["weight"], p["bias"], p["running_mean"], p["running_var"]
    f = DF.attention_residual
    with pytest.raises(ValueError, match="logits must have shape"):
        f(x, logits[:, :2], w, b, rm, rv, True)
    with pytest.raises(ValueError, match="N x C x H x W"):
        f(x[0], logits[0], w, b, rm, rv, True)
    with pytest.raises(TypeError, match="dtype"):
        f(x, logits.double(), w, b, rm, rv, True)
    with pytest.raises(TypeError, match="float16, bfloat16"):
        f(x.long(), logits.long(), w, b, rm, rv, True)
    with pytest.raises(TypeError, match="must be a Tensor"):
        f(x, logits.tolist(), w, b, rm, rv, True)
    with pytest.raises(ValueError, match="bn_weight must have shape"):
        f(x, logits, w[:2], b, rm, rv, True)
    with pytest.raises(ValueError, match="is on meta"):
        f(x, logits, w, b, rm.to("meta"), rv, True)
    with pytest.raises(ValueError, match="both running_mean and running_var"):
        f(x, logits, w, b, rm, None, False)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        f(x[:1, :, :1, :1], logits[:1, :, :1, :1], w, b, rm, rv, True)


@pytest.mark.parametrize("training", [True, False])
def test_triton_position_ranges_split_within_a_sample(training):
    """Batch statistics and backward partial sums merge position ranges of unequal length."""
    with kcommon.tuned(tile=64, max_block_c=8, target_programs=512):
        assert kcommon.split_range(99, 64, 3 * 19) == (64, 2)  # bn_stats: 64 + 35 positions
        assert kcommon.split_range(99, 8, 3) == (16, 7)  # backward: six ranges of 16, one of 3
        x, logits, p = make_inputs(3, 19, 9, 11)
        compare("triton", x, logits, p, training)


def test_torch_backend_reads_no_value_back_off_the_cpu():
    """On a GPU the torch backend runs for fp64 under "auto" and for --ops-backend torch: its forward and
    backward must not read a tensor value back (a host sync each step; the overflow test of the exp2
    softmax did). Meta tensors have no values, so any read raises; the CPU result is the shifted one's."""
    from ddakern.ops import attention_residual as ar
    from kernels.contract import ResidualGrads, ResidualTensors

    g = torch.Generator().manual_seed(7)
    x, logits = torch.randn(2, 5, 3, 3, generator=g), torch.randn(2, 5, 3, 3, generator=g)
    weight, bias, mean = torch.rand(5, generator=g) + 0.5, torch.randn(5, generator=g), torch.randn(5, generator=g)
    rstd = torch.rand(5, generator=g) + 0.5
    meta = ResidualTensors(*(t.to("meta") for t in (x, logits, weight, bias, mean, rstd)))
    out = ar.torch_forward(meta)
    dx, dl, dw, db = ar.torch_backward(torch.empty_like(out), meta, ResidualGrads(True, True, True))
    assert out.shape == dx.shape == dl.shape == x.shape and dw.shape == db.shape == (5,)
    z = ar._scaled_logits(logits, weight, bias, mean, rstd)
    torch.testing.assert_close(ar._softmax2(z.clone(), inplace=True), ar._softmax2_shifted(z), rtol=1e-6, atol=1e-7)
