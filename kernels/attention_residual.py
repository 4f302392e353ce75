"""Triton kernels of the fused attention residual `x * (1 + softmax_c(relu(batch_norm(logits))))`.

Tensors are viewed as N x C x P (P = H*W positions) with arbitrary strides, so contiguous and
channels_last inputs need no copy. The softmax runs over C at each (n, p); a program owns a block of
positions and all channels (looping over channel chunks with an online softmax when C is large).
Batch statistics are per channel over N*P, reduced with Chan's parallel variance merge (fp32).
The backward recomputes the softmax from logits instead of saving it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import as_ncp, blocks, cdiv, grid, next_pow2, on_input_device, split_range, tuning
from .contract import BatchNormState, ResidualGrads, ResidualTensors
from .layout import empty_ncp_like

# ---------------------------------------------------------------------------------------------
# tile index math (inlined by Triton)
# ---------------------------------------------------------------------------------------------


@triton.jit
def _positions(p0, end, BLOCK_P: tl.constexpr):
    """Offsets and mask of the position block p0 .. p0 + BLOCK_P of a range ending before `end`."""
    offs_p = p0 + tl.arange(0, BLOCK_P)
    return offs_p, offs_p < end


@triton.jit
def _channels(k, C, mask_p, BLOCK_C: tl.constexpr):
    """Offsets and mask of channel chunk k, and the [BLOCK_C, BLOCK_P] tile mask with positions mask_p."""
    offs_c = k * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    return offs_c, mask_c, mask_c[:, None] & mask_p[None, :]


@triton.jit
def _load_tile(base, s_c, s_p, offs_c, offs_p, mask):
    """Load a [BLOCK_C, BLOCK_P] tile of a strided map in fp32 (0 where masked)."""
    return tl.load(base + offs_c[:, None] * s_c + offs_p[None, :] * s_p, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _store_tile(base, s_c, s_p, offs_c, offs_p, value, mask):
    """Store an fp32 [BLOCK_C, BLOCK_P] tile into a strided map, converted to the map's dtype."""
    ptrs = base + offs_c[:, None] * s_c + offs_p[None, :] * s_p
    tl.store(ptrs, value.to(ptrs.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# batch statistics
# ---------------------------------------------------------------------------------------------


@triton.jit
def _stats_partial_kernel(
    l_ptr, pmean_ptr, pm2_ptr, C, HW, RANGE, SPLIT, s_n, s_c, s_p,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """Per (channel block, sample, position range): mean and M2 of the logits (Chan merge per tile)."""
    n = tl.program_id(0)
    pid_c = tl.program_id(1)
    sp = tl.program_id(2)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    start = sp * RANGE
    end = tl.minimum(start + RANGE, HW)
    base = l_ptr + n.to(tl.int64) * s_n
    cnt = tl.zeros([BLOCK_C], tl.float32)
    mean = tl.zeros([BLOCK_C], tl.float32)
    m2 = tl.zeros([BLOCK_C], tl.float32)
    for p0 in range(start, end, BLOCK_P):
        offs_p, mask_p = _positions(p0, end, BLOCK_P)
        mask = mask_c[:, None] & mask_p[None, :]
        v = _load_tile(base, s_c, s_p, offs_c, offs_p, mask)
        tcnt = tl.sum(mask_p.to(tl.float32), 0)
        tmean = tl.sum(v, 1) / tcnt
        d = tl.where(mask, v - tmean[:, None], 0.0)
        tm2 = tl.sum(d * d, 1)
        new = cnt + tcnt
        delta = tmean - mean
        mean = mean + delta * (tcnt / new)
        m2 = m2 + tm2 + delta * delta * (cnt * (tcnt / new))
        cnt = new
    row = n * SPLIT + sp
    tl.store(pmean_ptr + row * C + offs_c, mean, mask=mask_c)
    tl.store(pm2_ptr + row * C + offs_c, m2, mask=mask_c)


@triton.jit
def _partial_rows(pmean_ptr, r0, C, HW, RANGE, SPLIT, ROWS, offs_c, mask_c, BLOCK_R: tl.constexpr):
    """Rows r0.. of the partials: their indices, position counts, [BLOCK_R, BLOCK_C] mask and partial means."""
    rows = r0 + tl.arange(0, BLOCK_R)
    mask_r = rows < ROWS
    rc = tl.minimum(RANGE, HW - (rows % SPLIT) * RANGE).to(tl.float32)
    mask = mask_r[:, None] & mask_c[None, :]
    pm = tl.load(pmean_ptr + rows[:, None] * C + offs_c[None, :], mask=mask, other=0.0)
    return rows, rc, mask, pm


@triton.jit
def _stats_finalize_kernel(
    pmean_ptr, pm2_ptr, mean_ptr, rstd_ptr, rm_ptr, rv_ptr, C, HW, RANGE, SPLIT, ROWS,
    total, momentum, eps, unbias,
    HAS_RUNNING: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Merge the partials of one channel block; write mean, rstd and update running statistics."""
    pid_c = tl.program_id(0)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    # pass 1: count-weighted mean of the partial means
    acc = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    for r0 in range(0, ROWS, BLOCK_R):
        rows, rc, mask, pm = _partial_rows(pmean_ptr, r0, C, HW, RANGE, SPLIT, ROWS, offs_c, mask_c, BLOCK_R)
        acc += tl.where(mask, pm * rc[:, None], 0.0)
    mean = tl.sum(acc, 0) / total
    # pass 2: M2 = sum(M2_r) + sum(n_r * (mean_r - mean)^2)
    acc = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    for r0 in range(0, ROWS, BLOCK_R):
        rows, rc, mask, pm = _partial_rows(pmean_ptr, r0, C, HW, RANGE, SPLIT, ROWS, offs_c, mask_c, BLOCK_R)
        pq = tl.load(pm2_ptr + rows[:, None] * C + offs_c[None, :], mask=mask, other=0.0)
        d = pm - mean[None, :]
        acc += tl.where(mask, pq + rc[:, None] * d * d, 0.0)
    var = tl.sum(acc, 0) / total
    rstd = 1.0 / tl.sqrt(var + eps)
    tl.store(mean_ptr + offs_c, mean, mask=mask_c)
    tl.store(rstd_ptr + offs_c, rstd, mask=mask_c)
    if HAS_RUNNING:
        rm = tl.load(rm_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
        rv = tl.load(rv_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
        rm = (1.0 - momentum) * rm + momentum * mean
        rv = (1.0 - momentum) * rv + momentum * (var * unbias)
        tl.store(rm_ptr + offs_c, rm.to(rm_ptr.dtype.element_ty), mask=mask_c)
        tl.store(rv_ptr + offs_c, rv.to(rv_ptr.dtype.element_ty), mask=mask_c)


@on_input_device
def bn_stats(logits: torch.Tensor, state: BatchNormState) -> tuple[torch.Tensor, torch.Tensor]:
    """AttentionResidualBackend.bn_stats (kernels.contract) for fp32 statistics: two Triton passes."""
    running_mean, running_var, momentum, eps = state
    n, c, h, w = logits.shape
    hw = h * w
    lg, s_n, s_c, s_p = as_ncp(logits)
    if s_p == 1 or s_c != 1:  # positions contiguous: long position blocks
        block_p = min(next_pow2(hw), tuning().tile, 1024)
        block_c = max(1, min(next_pow2(c), tuning().tile // block_p))
    else:  # channels contiguous
        block_c = min(next_pow2(c), tuning().tile, 256)
        block_p = max(1, min(next_pow2(hw), tuning().tile // block_c))
    rng, split = split_range(hw, block_p, n * cdiv(c, block_c))
    rows = n * split
    dev = logits.device
    pmean = torch.empty((rows, c), device=dev, dtype=torch.float32)
    pm2 = torch.empty((rows, c), device=dev, dtype=torch.float32)
    _stats_partial_kernel[grid(n, cdiv(c, block_c), split)](
        lg, pmean, pm2, c, hw, rng, split, s_n, s_c, s_p,
        BLOCK_C=block_c, BLOCK_P=block_p, num_warps=tuning().num_warps,
    )  # fmt: skip
    mean = torch.empty(c, device=dev, dtype=torch.float32)
    rstd = torch.empty(c, device=dev, dtype=torch.float32)
    has_running = running_mean is not None and running_var is not None
    rm = running_mean.contiguous() if has_running else mean  # updated in place by the kernel
    rv = running_var.contiguous() if has_running else rstd
    total = n * hw
    fblock_c = min(next_pow2(c), 64)
    fblock_r = max(1, min(next_pow2(rows), tuning().tile // fblock_c, 64 if tuning().tile <= 8192 else 1 << 14))
    _stats_finalize_kernel[grid(cdiv(c, fblock_c))](
        pmean, pm2, mean, rstd,
        rm, rv,
        c, hw, rng, split, rows, float(total), float(momentum), float(eps), total / max(total - 1, 1),
        HAS_RUNNING=has_running, BLOCK_R=fblock_r, BLOCK_C=fblock_c, num_warps=4,
    )  # fmt: skip
    if has_running and rm is not running_mean:  # non-contiguous running statistics: write back
        running_mean.copy_(rm)
        running_var.copy_(rv)
    return mean, rstd


# ---------------------------------------------------------------------------------------------
# forward
# ---------------------------------------------------------------------------------------------


@triton.jit
def _chan(w_ptr, b_ptr, mean_ptr, rstd_ptr, offs_c, mask_c):
    w = tl.load(w_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
    mean = tl.load(mean_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
    rstd = tl.load(rstd_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
    return w, b, mean, rstd


@triton.jit
def _bn(l_base, s_c, s_p, offs_c, offs_p, mask, w, b, mean, rstd):
    """Normalised logits xhat and pre-activation zp = xhat * w + b of one tile (fp32)."""
    xhat = (_load_tile(l_base, s_c, s_p, offs_c, offs_p, mask) - mean[:, None]) * rstd[:, None]
    zp = xhat * w[:, None] + b[:, None]
    return xhat, zp


@triton.jit
def _softmax_tile(zp, mask, mask_p):
    """m = softmax over the channels of relu(zp) for a tile holding all of them; also its max and 1/sum."""
    z = tl.maximum(zp, 0.0)
    mx = tl.max(z, 0)
    e = tl.where(mask, tl.exp(z - mx[None, :]), 0.0)
    inv = 1.0 / tl.where(mask_p, tl.sum(e, 0), 1.0)
    return e * inv[None, :], mx, inv


@triton.jit
def _softmax_with(zp, mask, mx, inv):
    """m = softmax over the channels of relu(zp) from the per-position max and 1/sum of all channels."""
    return tl.where(mask, tl.exp(tl.maximum(zp, 0.0) - mx[None, :]), 0.0) * inv[None, :]


@triton.jit
def _softmax_stats(
    l_base, s_c, s_p, w_ptr, b_ptr, mean_ptr, rstd_ptr, C, offs_p, mask_p,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, NUM_CHUNKS: tl.constexpr,
):  # fmt: skip
    """Online max and 1/sum(exp) over all channels of relu(bn(logits)) at each position."""
    mx = tl.zeros([BLOCK_P], tl.float32)  # relu output >= 0, so 0 is a valid starting maximum
    den = tl.zeros([BLOCK_P], tl.float32)
    for k in range(NUM_CHUNKS):
        offs_c, mask_c, mask = _channels(k, C, mask_p, BLOCK_C)
        w, b, mean, rstd = _chan(w_ptr, b_ptr, mean_ptr, rstd_ptr, offs_c, mask_c)
        _, zp = _bn(l_base, s_c, s_p, offs_c, offs_p, mask, w, b, mean, rstd)
        z = tl.maximum(zp, 0.0)
        nmx = tl.maximum(mx, tl.max(z, 0))
        den = den * tl.exp(mx - nmx) + tl.sum(tl.where(mask, tl.exp(z - nmx[None, :]), 0.0), 0)
        mx = nmx
    inv = 1.0 / tl.where(mask_p, den, 1.0)
    return mx, inv


@triton.jit
def _fwd_kernel(
    x_ptr, l_ptr, o_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, C, HW,
    sxn, sxc, sxp, sln, slc, slp, son, soc, sop,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, NUM_CHUNKS: tl.constexpr,
):  # fmt: skip
    n = tl.program_id(0).to(tl.int64)
    pid_p = tl.program_id(1)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_p = offs_p < HW
    x_base = x_ptr + n * sxn
    l_base = l_ptr + n * sln
    o_base = o_ptr + n * son
    if NUM_CHUNKS == 1:
        offs_c = tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        mask = mask_c[:, None] & mask_p[None, :]
        w, b, mean, rstd = _chan(w_ptr, b_ptr, mean_ptr, rstd_ptr, offs_c, mask_c)
        _, zp = _bn(l_base, slc, slp, offs_c, offs_p, mask, w, b, mean, rstd)
        m, _, _ = _softmax_tile(zp, mask, mask_p)
        out = _load_tile(x_base, sxc, sxp, offs_c, offs_p, mask) * (1.0 + m)
        _store_tile(o_base, soc, sop, offs_c, offs_p, out, mask)
    else:
        mx, inv = _softmax_stats(
            l_base,
            slc,
            slp,
            w_ptr,
            b_ptr,
            mean_ptr,
            rstd_ptr,
            C,
            offs_p,
            mask_p,
            BLOCK_C,
            BLOCK_P,
            NUM_CHUNKS,
        )
        for k in range(NUM_CHUNKS):
            offs_c, mask_c, mask = _channels(k, C, mask_p, BLOCK_C)
            w, b, mean, rstd = _chan(w_ptr, b_ptr, mean_ptr, rstd_ptr, offs_c, mask_c)
            _, zp = _bn(l_base, slc, slp, offs_c, offs_p, mask, w, b, mean, rstd)
            m = _softmax_with(zp, mask, mx, inv)
            out = _load_tile(x_base, sxc, sxp, offs_c, offs_p, mask) * (1.0 + m)
            _store_tile(o_base, soc, sop, offs_c, offs_p, out, mask)


def forward_blocks(c: int, hw: int, channels_last: bool) -> tuple[int, int, int]:
    """(BLOCK_C, BLOCK_P, channel chunks) the forward launcher chooses for C x (H*W) maps under the budget in force."""
    return blocks(c, hw, channels_last)


@on_input_device
def forward(t: ResidualTensors) -> torch.Tensor:
    """AttentionResidualBackend.forward (kernels.contract): one Triton pass."""
    x, logits = t.x, t.logits
    n, c, h, w = x.shape
    hw = h * w
    weight, bias, mean, rstd = (v.contiguous() for v in t[2:])
    out = empty_ncp_like(x)
    xv, sxn, sxc, sxp = as_ncp(x)
    lv, sln, slc, slp = as_ncp(logits)
    ov, son, soc, sop = as_ncp(out)
    assert ov is out, "empty_like output must be dense"
    block_c, block_p, chunks = blocks(c, hw, sxc == 1)
    _fwd_kernel[grid(n, cdiv(hw, block_p))](
        xv, lv, out, weight, bias, mean, rstd, c, hw,
        sxn, sxc, sxp, sln, slc, slp, son, soc, sop,
        BLOCK_C=block_c, BLOCK_P=block_p, NUM_CHUNKS=chunks, num_warps=tuning().num_warps,
    )  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------
# backward
# ---------------------------------------------------------------------------------------------


@triton.jit
def _bwd_tile(dy_base, x_base, l_base, sdc, sdp, sxc, sxp, slc, slp, offs_c, offs_p, mask, w, b, mean, rstd, mx, inv):
    """Recompute one tile: returns (m, dy, dy * x, xhat, zp) in fp32."""
    xhat, zp = _bn(l_base, slc, slp, offs_c, offs_p, mask, w, b, mean, rstd)
    m = _softmax_with(zp, mask, mx, inv)
    dy = _load_tile(dy_base, sdc, sdp, offs_c, offs_p, mask)
    return m, dy, dy * _load_tile(x_base, sxc, sxp, offs_c, offs_p, mask), xhat, zp


@triton.jit
def _bwd_chunk(
    k, dy_base, x_base, l_base, sdc, sdp, sxc, sxp, slc, slp, w_ptr, b_ptr, mean_ptr, rstd_ptr,
    C, offs_p, mask_p, mx, inv, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Channel chunk k of the chunked backward: its offsets and masks, gain w * rstd, and _bwd_tile."""
    offs_c, mask_c, mask = _channels(k, C, mask_p, BLOCK_C)
    w, b, mean, rstd = _chan(w_ptr, b_ptr, mean_ptr, rstd_ptr, offs_c, mask_c)
    m, dy, dm, xhat, zp = _bwd_tile(
        dy_base, x_base, l_base, sdc, sdp, sxc, sxp, slc, slp, offs_c, offs_p, mask, w, b, mean, rstd, mx, inv
    )
    return offs_c, mask_c, mask, w * rstd, m, dy, dm, xhat, zp


@triton.jit
def _store_pos(pos_base, HW, offs_p, mask_p, mx, inv, s):
    tl.store(pos_base + offs_p, mx, mask=mask_p)
    tl.store(pos_base + HW + offs_p, inv, mask=mask_p)
    tl.store(pos_base + 2 * HW + offs_p, s, mask=mask_p)


@triton.jit
def _load_pos(pos_base, HW, offs_p, mask_p):
    mx = tl.load(pos_base + offs_p, mask=mask_p, other=0.0)
    inv = tl.load(pos_base + HW + offs_p, mask=mask_p, other=1.0)
    s = tl.load(pos_base + 2 * HW + offs_p, mask=mask_p, other=0.0)
    return mx, inv, s


@triton.jit
def _bwd_kernel(
    dy_ptr, x_ptr, l_ptr, dx_ptr, dl_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr,
    psum_ptr, psumx_ptr, gsum_ptr, gsumx_ptr, pos_ptr, C, HW, RANGE, SPLIT, inv_total,
    sdn, sdc, sdp, sxn, sxc, sxp, sln, slc, slp, sgn, sgc, sgp, son, soc, sop,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, NUM_CHUNKS: tl.constexpr,
    WRITE_DX: tl.constexpr, WRITE_PARTIALS: tl.constexpr, WRITE_DL: tl.constexpr, CENTER: tl.constexpr,
    POS: tl.constexpr,
):  # fmt: skip
    """One pass over a position range of one sample.

    dx = dy * (1 + m); dbn = [zp > 0] * m * (dy*x - s) with s = sum_c(m * dy * x).
    WRITE_PARTIALS: per-channel sums of dbn and dbn * xhat over the range (row n * SPLIT + split).
    WRITE_DL: dl = w * rstd * dbn, minus the batch-statistic terms (gsum, gsumx) when CENTER.
    POS 1: also store the per-position softmax max, 1/sum and s in the N x 3 x HW scratch pos_ptr;
    POS 2: load them instead of reducing over the channels again (the second pass of the training
    backward then has no cross-channel reduction; the scratch lives only between the two passes).
    """
    n = tl.program_id(0)
    sp = tl.program_id(1)
    n64 = n.to(tl.int64)
    start = sp * RANGE
    end = tl.minimum(start + RANGE, HW)
    dy_base = dy_ptr + n64 * sdn
    x_base = x_ptr + n64 * sxn
    l_base = l_ptr + n64 * sln
    dx_base = dx_ptr + n64 * sgn
    dl_base = dl_ptr + n64 * son
    pos_base = pos_ptr + n64 * (3 * HW)
    row = n * SPLIT + sp
    if NUM_CHUNKS == 1:
        offs_c = tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        w, b, mean, rstd = _chan(w_ptr, b_ptr, mean_ptr, rstd_ptr, offs_c, mask_c)
        gain = w * rstd
        if CENTER:
            gs = tl.load(gsum_ptr + offs_c, mask=mask_c, other=0.0) * inv_total
            gsx = tl.load(gsumx_ptr + offs_c, mask=mask_c, other=0.0) * inv_total
        acc_s = tl.zeros([BLOCK_C], tl.float32)
        acc_sx = tl.zeros([BLOCK_C], tl.float32)
        for p0 in range(start, end, BLOCK_P):
            offs_p, mask_p = _positions(p0, end, BLOCK_P)
            mask = mask_c[:, None] & mask_p[None, :]
            xhat, zp = _bn(l_base, slc, slp, offs_c, offs_p, mask, w, b, mean, rstd)
            if POS == 2:
                mx, inv, s = _load_pos(pos_base, HW, offs_p, mask_p)
                m = _softmax_with(zp, mask, mx, inv)
            else:
                m, mx, inv = _softmax_tile(zp, mask, mask_p)
                if POS == 1:  # stored now, so that mx and inv need no registers for the rest of the tile
                    tl.store(pos_base + offs_p, mx, mask=mask_p)
                    tl.store(pos_base + HW + offs_p, inv, mask=mask_p)
            dy = _load_tile(dy_base, sdc, sdp, offs_c, offs_p, mask)
            if WRITE_DX:
                _store_tile(dx_base, sgc, sgp, offs_c, offs_p, dy * (1.0 + m), mask)
            dm = dy * _load_tile(x_base, sxc, sxp, offs_c, offs_p, mask)
            if POS != 2:
                s = tl.sum(m * dm, 0)
            if POS == 1:
                tl.store(pos_base + 2 * HW + offs_p, s, mask=mask_p)
            dbn = tl.where(zp > 0.0, m * (dm - s[None, :]), 0.0)
            if WRITE_PARTIALS:
                acc_s += tl.sum(dbn, 1)
                acc_sx += tl.sum(dbn * xhat, 1)
            if WRITE_DL:
                if CENTER:
                    g = gain[:, None] * (dbn - gs[:, None] - xhat * gsx[:, None])
                else:
                    g = gain[:, None] * dbn
                _store_tile(dl_base, soc, sop, offs_c, offs_p, g, mask)
        if WRITE_PARTIALS:
            tl.store(psum_ptr + row * C + offs_c, acc_s, mask=mask_c)
            tl.store(psumx_ptr + row * C + offs_c, acc_sx, mask=mask_c)
    else:
        for p0 in range(start, end, BLOCK_P):
            offs_p, mask_p = _positions(p0, end, BLOCK_P)
            if POS == 2:
                mx, inv, s = _load_pos(pos_base, HW, offs_p, mask_p)
            else:
                mx, inv = _softmax_stats(
                    l_base, slc, slp, w_ptr, b_ptr, mean_ptr, rstd_ptr, C, offs_p, mask_p,
                    BLOCK_C, BLOCK_P, NUM_CHUNKS,
                )  # fmt: skip
                s = tl.zeros([BLOCK_P], tl.float32)
                for k in range(NUM_CHUNKS):
                    _, _, _, _, m, _, dm, _, _ = _bwd_chunk(
                        k, dy_base, x_base, l_base, sdc, sdp, sxc, sxp, slc, slp, w_ptr, b_ptr, mean_ptr, rstd_ptr,
                        C, offs_p, mask_p, mx, inv, BLOCK_C,
                    )  # fmt: skip
                    s += tl.sum(m * dm, 0)
                if POS == 1:
                    _store_pos(pos_base, HW, offs_p, mask_p, mx, inv, s)
            for k in range(NUM_CHUNKS):
                offs_c, mask_c, mask, gain, m, dy, dm, xhat, zp = _bwd_chunk(
                    k, dy_base, x_base, l_base, sdc, sdp, sxc, sxp, slc, slp, w_ptr, b_ptr, mean_ptr, rstd_ptr,
                    C, offs_p, mask_p, mx, inv, BLOCK_C,
                )  # fmt: skip
                if WRITE_DX:
                    _store_tile(dx_base, sgc, sgp, offs_c, offs_p, dy * (1.0 + m), mask)
                dbn = tl.where(zp > 0.0, m * (dm - s[None, :]), 0.0)
                if WRITE_PARTIALS:  # this program owns its partial row: read-modify-write is race free
                    ps = tl.load(psum_ptr + row * C + offs_c, mask=mask_c, other=0.0)
                    psx = tl.load(psumx_ptr + row * C + offs_c, mask=mask_c, other=0.0)
                    tl.store(psum_ptr + row * C + offs_c, ps + tl.sum(dbn, 1), mask=mask_c)
                    tl.store(psumx_ptr + row * C + offs_c, psx + tl.sum(dbn * xhat, 1), mask=mask_c)
                if WRITE_DL:
                    if CENTER:
                        gs = tl.load(gsum_ptr + offs_c, mask=mask_c, other=0.0) * inv_total
                        gsx = tl.load(gsumx_ptr + offs_c, mask=mask_c, other=0.0) * inv_total
                        g = gain[:, None] * (dbn - gs[:, None] - xhat * gsx[:, None])
                    else:
                        g = gain[:, None] * dbn
                    _store_tile(dl_base, soc, sop, offs_c, offs_p, g, mask)


@on_input_device
def backward(
    grad: torch.Tensor, t: ResidualTensors, want: ResidualGrads
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """AttentionResidualBackend.backward (kernels.contract): one Triton pass, or two when dlogits goes
    through the batch statistics (want.sync_means then runs between them, and the second pass centres
    dlogits with its result)."""
    x, logits = t.x, t.logits
    need_x, need_logits, batch_stats, sync_means = want
    n, c, h, w = x.shape
    hw = h * w
    dev = x.device
    gv, sdn, sdc, sdp = as_ncp(grad)
    xv, sxn, sxc, sxp = as_ncp(x)
    lv, sln, slc, slp = as_ncp(logits)
    weight, bias, mean, rstd = (v.contiguous() for v in t[2:])
    dx = empty_ncp_like(x) if need_x else x.new_empty(0)
    dl = empty_ncp_like(logits) if need_logits else logits.new_empty(0)
    sgn, sgc, sgp = as_ncp(dx)[1:] if need_x else (0, 0, 0)
    son, soc, sop = as_ncp(dl)[1:] if need_logits else (0, 0, 0)
    block_c, block_p, chunks = blocks(c, hw, sxc == 1, tuning().bwd_tile)
    rng, split = split_range(hw, block_p, n)
    rows = n * split
    psum = torch.zeros((rows, c), device=dev, dtype=torch.float32)
    psumx = torch.zeros((rows, c), device=dev, dtype=torch.float32)
    common = (c, hw, rng, split, 1.0 / (n * hw))
    strides = (sdn, sdc, sdp, sxn, sxc, sxp, sln, slc, slp, sgn, sgc, sgp, son, soc, sop)
    meta = dict(
        BLOCK_C=block_c, BLOCK_P=block_p, NUM_CHUNKS=chunks, num_warps=tuning().bwd_num_warps or tuning().num_warps
    )
    bwd_grid = grid(n, split)
    dx_arg, dl_arg = (dx if need_x else xv), (dl if need_logits else lv)  # unwritten dummies: never empty
    two_pass = need_logits and batch_stats
    # per-position softmax max, 1/sum and s from the first pass, read by the second (scratch, fp32)
    pos = torch.empty((n, 3, hw), device=dev, dtype=torch.float32) if two_pass else psum
    _bwd_kernel[bwd_grid](
        gv, xv, lv, dx_arg, dl_arg, weight, bias, mean, rstd, psum, psumx, psum, psumx, pos, *common, *strides,
        WRITE_DX=need_x, WRITE_PARTIALS=True, WRITE_DL=need_logits and not batch_stats, CENTER=False,
        POS=1 if two_pass else 0, **meta,
    )  # fmt: skip
    gsum, gsumx = psum.sum(0), psumx.sum(0)
    if two_pass:
        centre, inv_total = (gsum, gsumx), common[-1]
        if sync_means is not None:  # the means over every rank's batch
            centre, inv_total = sync_means(torch.stack((gsum, gsumx))).unbind(0), 1.0
        _bwd_kernel[bwd_grid](
            gv, xv, lv, dx_arg, dl_arg, weight, bias, mean, rstd, psum, psumx, *centre, pos, *common[:-1], inv_total,
            *strides,
            WRITE_DX=False, WRITE_PARTIALS=False, WRITE_DL=True, CENTER=True, POS=2, **meta,
        )  # fmt: skip
    return dx, dl, gsumx.to(weight.dtype), gsum.to(bias.dtype)
