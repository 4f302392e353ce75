"""ddakern.functional.channel_attention against the autograd reference, on the torch and triton backends."""

from __future__ import annotations

import pytest
import torch
from op_tolerance import allowance_fraction

from ddakern import functional as DF
from ddakern.dispatch import use_ops_backend
from ddakern.ops._common import mergeable, triton_kernels
from ddakern.profiling import saved_tensor_bytes

kcommon = triton_kernels("_common")  # the launchers' block-size budget (imports no triton)

HWS = [(1, 1), (7, 7), (13, 17)]
CS = [1, 3, 7, 64, 257]
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # CPU: triton via the interpreter
NAMES = ("out", "dx", "dlogits", "dscale")
VARIANTS = [(False, False), (True, False), (False, True), (True, True)]  # (scale, residual)


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """Max abs error relative to the reference's max magnitude."""
    ref = ref.double()
    return ((a.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


def make_inputs(n, c, h, w, dtype=torch.float32, channels_last=False, logits_4d=False):
    x = torch.randn(n, c, h, w).to(DEVICE, dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    logits = (torch.randn(n, c, 1, 1) if logits_4d else torch.randn(n, c)).mul(2).to(DEVICE, dtype)
    scale = (torch.rand(n, c) + 0.5).to(DEVICE, dtype)
    return x, logits, scale


def run(mode, x, logits, scale, residual, grad=None, dtype=None):
    cast = (lambda t: t.to(dtype)) if dtype is not None else (lambda t: t)
    xs = cast(x).detach().clone(memory_format=torch.preserve_format).requires_grad_()
    ls = cast(logits).detach().clone().requires_grad_()
    ss = cast(scale).detach().clone().requires_grad_() if scale is not None else None
    with use_ops_backend(mode):
        y = DF.channel_attention(xs, ls, ss, residual=residual)
        if grad is None:
            grad = torch.randn_like(y)
        y.backward(cast(grad))
    return (y, xs.grad, ls.grad, ss.grad if ss is not None else torch.zeros(1, device=xs.device)), grad


def compare(mode, x, logits, scale, residual, tol=1e-5, always_fp64=False) -> dict[str, float]:
    """Within `tol` of the fp32 reference, or (ill-conditioned softmax backward) at most twice the fp32
    reference's own error against a float64 reference. Returns each output's error as a fraction of its
    allowance (allowance_fraction; dscale only with a scale; with always_fp64 the float64 reference is
    run even when all are within tol)."""
    ref, g = run("reference", x, logits, scale, residual)
    got, _ = run(mode, x, logits, scale, residual, grad=g)
    if mergeable(x):  # else (H, W not mergeable) the fused ops write contiguous outputs
        assert got[0].stride() == ref[0].stride(), "output must keep the input memory format"
    assert got[2].shape == logits.shape
    ref64 = None
    fractions = {}
    for k, (name, a, r) in enumerate(zip(NAMES, got, ref, strict=True)):
        assert a.dtype == r.dtype and a.shape == r.shape, name
        if name == "dscale" and scale is None:
            continue
        err = rel_err(a, r)
        if err <= tol and not always_fp64:
            fractions[name] = allowance_fraction(err, tol, None, None)
            continue
        if ref64 is None:
            ref64, _ = run("reference", x, logits, scale, residual, grad=g, dtype=torch.float64)
        ours, theirs = rel_err(a, ref64[k]), rel_err(r, ref64[k])
        fractions[name] = allowance_fraction(err, tol, ours, theirs)
        if err <= tol:
            continue
        assert ours <= 2 * theirs, f"{mode} {name}: error {err:.2e}; vs fp64 {ours:.2e} > 2 x {theirs:.2e}"
    return fractions


@pytest.mark.parametrize("c", CS)
@pytest.mark.parametrize("hw", HWS)
def test_torch_backend_matches_reference(c, hw):
    for n in (1, 2, 5):
        for k, (use_scale, residual) in enumerate(VARIANTS):
            x, logits, scale = make_inputs(n, c, *hw, logits_4d=k % 2 == 1)
            compare("torch", x, logits, scale if use_scale else None, residual)


TRITON_CASES = [
    # (n, c, h, w, scale, residual, channels_last)
    (2, 1, 7, 7, True, False, False),
    (1, 3, 1, 1, False, True, False),
    (2, 7, 13, 17, True, True, True),
    (5, 64, 1, 1, True, False, False),
    (2, 64, 7, 7, False, False, True),
    (2, 257, 7, 7, True, True, False),
    (1, 257, 13, 17, False, False, True),
]


@pytest.mark.parametrize("case", TRITON_CASES, ids=str)
def test_triton_backend_matches_reference(case):
    n, c, h, w, use_scale, residual, cl = case
    x, logits, scale = make_inputs(n, c, h, w, channels_last=cl, logits_4d=residual)
    compare("triton", x, logits, scale if use_scale else None, residual)


def test_triton_chunked_and_split_paths(monkeypatch):
    """Small tiles force chunked logits rows and split position ranges."""
    monkeypatch.setattr(kcommon, "TUNING", kcommon.Tuning(tile=32, max_block_c=4, target_programs=64, num_warps=4))
    x, logits, scale = make_inputs(3, 11, 5, 7)
    compare("triton", x, logits, scale, True)


@pytest.mark.parametrize("mode", ["torch", "triton"])
def test_non_contiguous_inputs(mode):
    n, c, h, w = 2, 6, 5, 7
    x = torch.randn(n, 2 * c, h, w, device=DEVICE)[:, 1::2]
    logits = torch.randn(c, n, device=DEVICE).t()  # transposed N x C
    scale = torch.randn(n, 2 * c, device=DEVICE)[:, ::2]
    compare(mode, x, logits, scale, True)
    x2 = torch.randn(n, c, w, h, device=DEVICE).transpose(2, 3)  # H and W not mergeable
    compare(mode, x2, logits, None, False)


def lowp_errors(mode, dtype, n, c, h, w, use_scale, residual, channels_last=False) -> dict[str, float]:
    """Every output's error against a float64 reference at most twice the error of the reference run in
    `dtype` (plus 1e-6); returns each output's error as a fraction of that allowance."""
    x, logits, scale = make_inputs(n, c, h, w, channels_last=channels_last)
    scale = scale if use_scale else None
    ref64, g = run("reference", x, logits, scale, residual, dtype=torch.float64)
    g = g.to(dtype)
    got, _ = run(mode, x, logits, scale, residual, grad=g, dtype=dtype)
    ref_lp, _ = run("reference", x, logits, scale, residual, grad=g, dtype=dtype)
    fractions = {}
    for name, a, r_lp, r64 in zip(NAMES, got, ref_lp, ref64, strict=True):
        if name == "dscale" and scale is None:
            continue
        assert a.dtype == r_lp.dtype, name
        ours, theirs = rel_err(a, r64), rel_err(r_lp, r64)
        fractions[name] = ours / (2 * theirs + 1e-6)
        assert ours <= 2 * theirs + 1e-6, f"{mode} {dtype} {name}: error {ours:.2e} > 2 x reference {theirs:.2e}"
    return fractions


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("variant", VARIANTS)
def test_low_precision_torch(dtype, variant):
    lowp_errors("torch", dtype, 4, 64, 13, 17, *variant)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_triton(dtype):
    lowp_errors("triton", dtype, 2, 16, 7, 7, True, True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck_float64_torch_backend(variant):
    use_scale, residual = variant
    x = torch.randn(2, 5, 3, 2, dtype=torch.float64, requires_grad=True)
    logits = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    scale = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    with use_ops_backend("torch"):
        if use_scale:
            assert torch.autograd.gradcheck(lambda a, b, s: DF.channel_attention(a, b, s, residual), (x, logits, scale))
        else:
            assert torch.autograd.gradcheck(lambda a, b: DF.channel_attention(a, b, None, residual), (x, logits))


@pytest.mark.parametrize("variant", VARIANTS)
def test_saved_bytes(variant):
    use_scale, residual = variant
    n, c, h, w = 4, 16, 16, 16
    x = torch.randn(n, c, h, w, requires_grad=True)
    logits = torch.randn(n, c, requires_grad=True)
    args = (x, logits, torch.rand(n, c, requires_grad=True)) if use_scale else (x, logits)

    def fn(*a):
        return DF.channel_attention(*a, residual=residual)

    with use_ops_backend("reference"):
        ref_total = saved_tensor_bytes(fn, *args)
        ref_extra = saved_tensor_bytes(fn, *args, exclude_args=True)
    with use_ops_backend("torch"):
        fused_total = saved_tensor_bytes(fn, *args)
        fused_extra = saved_tensor_bytes(fn, *args, exclude_args=True)
    big, small = x.numel() * 4, n * c * 4
    assert fused_total == big + small * len(args[1:])  # exactly its inputs
    assert fused_extra == 0
    assert fused_extra <= 0.4 * ref_extra and ref_extra >= small
    if use_scale:  # the reference also keeps the product x * softmax(logits)
        assert ref_total >= 2 * big and fused_total <= 0.51 * ref_total


@pytest.mark.parametrize("mode", ["torch", "triton"])
def test_only_some_inputs_require_grad(mode):
    x, logits, scale = make_inputs(2, 5, 3, 4)
    for flags in ((True, False, False), (False, True, False), (False, False, True)):
        grads = []
        for m in ("reference", mode):
            leaves = [t.clone().requires_grad_(f) for t, f in zip((x, logits, scale), flags, strict=True)]
            with use_ops_backend(m):
                y = DF.channel_attention(*leaves, residual=True)
            (y * y).sum().backward()
            grads.append([y] + [t.grad for t in leaves if t.requires_grad])
        for a, r in zip(*grads, strict=True):
            assert rel_err(a, r) < 1e-5


def test_errors():
    x, logits, scale = make_inputs(2, 3, 4, 4)
    f = DF.channel_attention
    with pytest.raises(ValueError, match="logits must have shape"):
        f(x, logits[:, :2])
    with pytest.raises(ValueError, match="logits must have shape"):
        f(x, logits.reshape(2, 3, 1, 1).expand(2, 3, 2, 2))
    with pytest.raises(ValueError, match="scale must have shape"):
        f(x, logits, scale[:1])
    with pytest.raises(ValueError, match="N x C x H x W"):
        f(x[0], logits)
    with pytest.raises(TypeError, match="logits dtype"):
        f(x, logits.half())
    with pytest.raises(TypeError, match="scale dtype"):
        f(x, logits, scale.double())
    with pytest.raises(TypeError, match="must be a Tensor"):
        f(x, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="is on meta"):
        f(x, logits.to("meta"))
