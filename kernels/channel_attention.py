"""Triton kernels of the fused channel attention `x * softmax_c(logits) [* scale] [+ x]`.

logits and scale are N x C; x is viewed as N x C x P (P = H*W) with arbitrary strides. Each program
recomputes the softmax of its sample's logits row (tiny, cached) and scales a [BLOCK_C, P-range] slab
of x, so the forward is one launch and one read + write of x. The backward writes dx in the same pass
that reduces sum_p(dy * x) per (n, c), then one small program per sample turns it into dlogits, dscale.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import as_ncp, cdiv, grid, next_pow2, on_input_device, split_range, tuning
from .contract import ChannelInputs
from .layout import empty_ncp_like


@triton.jit
def _row_stats(l_row, s_lc, C, BLOCK_L: tl.constexpr):
    """Max and 1/sum(exp(l - max)) of one logits row (online over chunks, no -inf padding)."""
    offs = tl.arange(0, BLOCK_L)
    first = tl.load(l_row).to(tl.float32)
    mlane = tl.zeros([BLOCK_L], tl.float32) + first
    slane = tl.zeros([BLOCK_L], tl.float32)
    for c0 in range(0, C, BLOCK_L):
        cc = c0 + offs
        mask = cc < C
        v = tl.load(l_row + cc * s_lc, mask=mask, other=0.0).to(tl.float32)
        v = tl.where(mask, v, mlane)
        new = tl.maximum(mlane, v)
        slane = slane * tl.exp(mlane - new) + tl.where(mask, tl.exp(v - new), 0.0)
        mlane = new
    mx = tl.max(mlane, 0)
    den = tl.sum(slane * tl.exp(mlane - mx), 0)
    return mx, 1.0 / den


@triton.jit
def _coef(l_row, s_lc, s_row, s_sc, offs_c, mask_c, mx, inv, HAS_SCALE: tl.constexpr, RESIDUAL: tl.constexpr):
    """Softmax weight a and multiplier k = a [* scale] [+ 1] for a block of channels (fp32)."""
    lv = tl.load(l_row + offs_c * s_lc, mask=mask_c, other=0.0).to(tl.float32)
    a = tl.where(mask_c, tl.exp(lv - mx) * inv, 0.0)
    k = a
    if HAS_SCALE:
        k = k * tl.load(s_row + offs_c * s_sc, mask=mask_c, other=0.0).to(tl.float32)
    if RESIDUAL:
        k = k + 1.0
    return a, k


@triton.jit
def _fwd_kernel(
    x_ptr, l_ptr, s_ptr, o_ptr, C, HW, RANGE,
    sxn, sxc, sxp, son, soc, sop, sln, slc, ssn, ssc,
    HAS_SCALE: tl.constexpr, RESIDUAL: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_L: tl.constexpr,
):  # fmt: skip
    n = tl.program_id(0).to(tl.int64)
    pid_c = tl.program_id(1)
    start = tl.program_id(2) * RANGE
    end = tl.minimum(start + RANGE, HW)
    l_row = l_ptr + n * sln
    mx, inv = _row_stats(l_row, slc, C, BLOCK_L)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    _, k = _coef(l_row, slc, s_ptr + n * ssn, ssc, offs_c, mask_c, mx, inv, HAS_SCALE, RESIDUAL)
    x_base = x_ptr + n * sxn
    o_base = o_ptr + n * son
    for p0 in range(start, end, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        mask = mask_c[:, None] & (offs_p < end)[None, :]
        xv = tl.load(x_base + offs_c[:, None] * sxc + offs_p[None, :] * sxp, mask=mask, other=0.0)
        out = xv.to(tl.float32) * k[:, None]
        tl.store(o_base + offs_c[:, None] * soc + offs_p[None, :] * sop, out.to(o_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_dx_kernel(
    dy_ptr, x_ptr, dx_ptr, l_ptr, s_ptr, pg_ptr, N, C, HW, RANGE,
    sdn, sdc, sdp, sxn, sxc, sxp, sgn, sgc, sgp, sln, slc, ssn, ssc,
    HAS_SCALE: tl.constexpr, RESIDUAL: tl.constexpr, WRITE_DX: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_L: tl.constexpr,
):  # fmt: skip
    """dx = dy * k and the partial sums g[split, n, c] = sum_p dy * x over this program's range."""
    n = tl.program_id(0)
    pid_c = tl.program_id(1)
    sp = tl.program_id(2)
    n64 = n.to(tl.int64)
    start = sp * RANGE
    end = tl.minimum(start + RANGE, HW)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    if WRITE_DX:
        l_row = l_ptr + n64 * sln
        mx, inv = _row_stats(l_row, slc, C, BLOCK_L)
        _, k = _coef(l_row, slc, s_ptr + n64 * ssn, ssc, offs_c, mask_c, mx, inv, HAS_SCALE, RESIDUAL)
    acc = tl.zeros([BLOCK_C], tl.float32)
    for p0 in range(start, end, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        mask = mask_c[:, None] & (offs_p < end)[None, :]
        dy = tl.load(dy_ptr + n64 * sdn + offs_c[:, None] * sdc + offs_p[None, :] * sdp, mask=mask, other=0.0)
        dy = dy.to(tl.float32)
        xv = tl.load(x_ptr + n64 * sxn + offs_c[:, None] * sxc + offs_p[None, :] * sxp, mask=mask, other=0.0)
        acc += tl.sum(dy * xv.to(tl.float32), 1)
        if WRITE_DX:
            tl.store(
                dx_ptr + n64 * sgn + offs_c[:, None] * sgc + offs_p[None, :] * sgp,
                (dy * k[:, None]).to(dx_ptr.dtype.element_ty),
                mask=mask,
            )
    tl.store(pg_ptr + (sp * N + n) * C + offs_c, acc, mask=mask_c)


@triton.jit
def _load_g(pg_ptr, n, N, C, SPLIT, offs_c, mask_c, BLOCK_L: tl.constexpr):
    g = tl.zeros([BLOCK_L], tl.float32)
    for sp in range(0, SPLIT):
        g += tl.load(pg_ptr + (sp * N + n) * C + offs_c, mask=mask_c, other=0.0)
    return g


@triton.jit
def _bwd_logits_kernel(
    pg_ptr, l_ptr, s_ptr, dl_ptr, ds_ptr, N, C, SPLIT, sln, slc, ssn, ssc,
    HAS_SCALE: tl.constexpr, BLOCK_L: tl.constexpr,
):  # fmt: skip
    """Per sample: g = sum of partials; da = g [* scale]; dl = a * (da - sum(a * da)); ds = g * a."""
    n = tl.program_id(0)
    n64 = n.to(tl.int64)
    l_row = l_ptr + n64 * sln
    s_row = s_ptr + n64 * ssn
    mx, inv = _row_stats(l_row, slc, C, BLOCK_L)
    t = tl.zeros([BLOCK_L], tl.float32)
    for c0 in range(0, C, BLOCK_L):
        offs_c = c0 + tl.arange(0, BLOCK_L)
        mask_c = offs_c < C
        a, _ = _coef(l_row, slc, s_row, ssc, offs_c, mask_c, mx, inv, False, False)
        da = _load_g(pg_ptr, n, N, C, SPLIT, offs_c, mask_c, BLOCK_L)
        if HAS_SCALE:
            da = da * tl.load(s_row + offs_c * ssc, mask=mask_c, other=0.0).to(tl.float32)
        t += a * da
    tot = tl.sum(t, 0)
    for c0 in range(0, C, BLOCK_L):
        offs_c = c0 + tl.arange(0, BLOCK_L)
        mask_c = offs_c < C
        a, _ = _coef(l_row, slc, s_row, ssc, offs_c, mask_c, mx, inv, False, False)
        g = _load_g(pg_ptr, n, N, C, SPLIT, offs_c, mask_c, BLOCK_L)
        da = g
        if HAS_SCALE:
            da = g * tl.load(s_row + offs_c * ssc, mask=mask_c, other=0.0).to(tl.float32)
            tl.store(ds_ptr + n64 * C + offs_c, (g * a).to(ds_ptr.dtype.element_ty), mask=mask_c)
        tl.store(dl_ptr + n64 * C + offs_c, (a * (da - tot)).to(dl_ptr.dtype.element_ty), mask=mask_c)


def _blocks(c: int, hw: int, c_contiguous: bool) -> tuple[int, int, int]:
    """(BLOCK_C, BLOCK_P, BLOCK_L) for an [channels, positions] slab and the logits-row chunk."""
    tile = tuning().tile
    if c_contiguous:
        block_c = min(next_pow2(c), tile, 256)
        block_p = max(1, min(next_pow2(hw), tile // block_c))
    else:
        block_p = min(next_pow2(hw), tile, 512)
        block_c = max(1, min(next_pow2(c), tile // block_p))
    block_l = min(next_pow2(c), tuning().max_block_c)
    return block_c, block_p, block_l


def forward_blocks(c: int, hw: int, channels_last: bool) -> tuple[int, int, int]:
    """(BLOCK_C, BLOCK_P, channel chunks of the logits row) the forward launcher chooses under the budget in force."""
    block_c, block_p, block_l = _blocks(c, hw, channels_last)
    return block_c, block_p, cdiv(c, block_l)


def _rows(logits: torch.Tensor, scale: torch.Tensor | None) -> tuple[int, int, torch.Tensor, int, int]:
    sln, slc = logits.stride()
    if scale is None:
        return sln, slc, logits, 0, 0
    return sln, slc, scale, scale.stride(0), scale.stride(1)


@on_input_device
def forward(t: ChannelInputs) -> torch.Tensor:
    """ChannelAttentionBackend.forward (kernels.contract): one Triton pass."""
    x, logits, scale, residual = t
    n, c, h, w = x.shape
    hw = h * w
    out = empty_ncp_like(x)
    xv, sxn, sxc, sxp = as_ncp(x)
    ov, son, soc, sop = as_ncp(out)
    assert ov is out, "empty_like output must be dense"
    sln, slc, sv, ssn, ssc = _rows(logits, scale)
    block_c, block_p, block_l = _blocks(c, hw, sxc == 1)
    rng, split = split_range(hw, block_p, n * cdiv(c, block_c))
    _fwd_kernel[grid(n, cdiv(c, block_c), split)](
        xv, logits, sv, out, c, hw, rng, sxn, sxc, sxp, son, soc, sop, sln, slc, ssn, ssc,
        HAS_SCALE=scale is not None, RESIDUAL=residual,
        BLOCK_C=block_c, BLOCK_P=block_p, BLOCK_L=block_l, num_warps=tuning().num_warps,
    )  # fmt: skip
    return out


@on_input_device
def backward(grad: torch.Tensor, t: ChannelInputs, need_x: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ChannelAttentionBackend.backward (kernels.contract): dx and per-(n, c) partial sums, then dlogits."""
    x, logits, scale, residual = t
    n, c, h, w = x.shape
    hw = h * w
    gv, sdn, sdc, sdp = as_ncp(grad)
    xv, sxn, sxc, sxp = as_ncp(x)
    dx = empty_ncp_like(x) if need_x else x.new_empty(0)
    sgn, sgc, sgp = as_ncp(dx)[1:] if need_x else (0, 0, 0)
    sln, slc, sv, ssn, ssc = _rows(logits, scale)
    block_c, block_p, block_l = _blocks(c, hw, sxc == 1)
    rng, split = split_range(hw, block_p, n * cdiv(c, block_c))
    pg = torch.empty((split, n, c), device=x.device, dtype=torch.float32)
    _bwd_dx_kernel[grid(n, cdiv(c, block_c), split)](
        gv, xv, dx if need_x else xv, logits, sv, pg, n, c, hw, rng,
        sdn, sdc, sdp, sxn, sxc, sxp, sgn, sgc, sgp, sln, slc, ssn, ssc,
        HAS_SCALE=scale is not None, RESIDUAL=residual, WRITE_DX=need_x,
        BLOCK_C=block_c, BLOCK_P=block_p, BLOCK_L=block_l, num_warps=tuning().num_warps,
    )  # fmt: skip
    dl = torch.empty((n, c), device=x.device, dtype=logits.dtype)
    ds = torch.empty((n, c), device=x.device, dtype=scale.dtype) if scale is not None else logits.new_empty(0)
    _bwd_logits_kernel[grid(n)](
        pg, logits, sv, dl, ds if scale is not None else dl, n, c, split, sln, slc, ssn, ssc,
        HAS_SCALE=scale is not None, BLOCK_L=block_l, num_warps=4,
    )  # fmt: skip
    return dx, dl, ds
