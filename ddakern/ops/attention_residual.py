"""The fused attention residual `x * (1 + softmax_c(relu(batch_norm(logits))))`, DDA's mask head: its one home.

- `reference`: plain PyTorch ops differentiated by autograd; it defines the meaning. `mask`: its
  m = softmax_c(relu(batch_norm(logits))) alone (DDA's attention map, ddakern.layers.mask_head).
- `torch_bn_stats`, `torch_forward`, `torch_backward`: the PyTorch math of the `torch` backend; the
  Triton launchers in kernels.attention_residual are the `triton` backend. Both follow one interface,
  kernels.contract.AttentionResidualBackend, with its argument bundles (BatchNormState, ResidualTensors,
  ResidualGrads) defined there once.
- torch.library ops `ddakern::bn_stats`, `ddakern::attention_residual` and its backward op, with fake
  implementations and autograd, so torch.compile(fullgraph=True) and torch.export trace single nodes.
- `attention_residual`: the public op: input checks, then the backend ddakern.dispatch picks.
- `SPEC`: its description for the tests, benchmarks, GPU check and offline compile (ddakern.ops.registry).
- With a `process_group` (a converted nn.SyncBatchNorm's, see ddakern.ops.sync_bn) the batch
  statistics are those of every rank's batch: the reference normalises with sync_bn.batch_norm, the
  torch / triton backends run `_Synced` (the same launchers; the all-gather of the statistics before
  the forward, and the all-reduce of the backward's per-channel sums between its two passes).

Torch-backend notes: statistics and the softmax are computed in fp32 (fp64 for fp64 inputs); the
backward recomputes the softmax from the saved logits and per-channel mean / rstd, exactly as the
Triton kernels do. Each step is one ATen kernel over the whole tensor (CPU training runs this
backend): fp32 / fp64 inputs are never copied; half-precision inputs are upcast once. Batch
statistics: a sum then a centred sum of squares (two vectorised passes, much faster than Welford-based
var_mean). The normalisation is one pass of batch norm's inference kernel with log2(e) folded into
the affine, so that the softmax can use exp2 (3x faster than exp; also what tl.exp compiles to on
GPUs) and, since relu makes its input >= 0, needs no max pass. The backward uses softmax's, relu's
and batch norm's own backward kernels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ddakern.dispatch import backend_for
from ddakern.kernels_import import contract
from ddakern.ops import registry, sync_bn
from ddakern.ops._common import acc_dtype, check_arg, check_x, empty_ncp_like, like_layout, triton_kernels

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from torch.distributed import ProcessGroup

OP = "attention_residual"


def mask(
    logits: Tensor,
    bn_weight: Tensor | None,
    bn_bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
    process_group: ProcessGroup | None = None,
) -> Tensor:
    """The mask m = softmax_c(relu(batch_norm(logits))) in plain PyTorch, batch norm as nn.BatchNorm2d
    computes it (as nn.SyncBatchNorm over `process_group` when one is given)."""
    batch_stats = training or running_mean is None or running_var is None
    if batch_stats and process_group is not None:
        z = sync_bn.batch_norm(logits, running_mean, running_var, bn_weight, bn_bias, momentum, eps, process_group)
    else:
        z = F.batch_norm(logits, running_mean, running_var, bn_weight, bn_bias, batch_stats, momentum, eps)
    return torch.softmax(F.relu(z), dim=1)


def reference(x: Tensor, logits: Tensor, *batch_norm: Any, **options: Any) -> Tensor:
    """x * (1 + mask(logits, ...)): plain PyTorch ops differentiated by autograd, the op's meaning. The
    arguments after logits are attention_residual's (and mask's): bn_weight, bn_bias, running_mean,
    running_var, training, momentum, eps, process_group."""
    return x * (1 + mask(logits, *batch_norm, **options))


# ------------------------------------------------------------------------------- torch backend math

_DIMS = (0, 2, 3)
_LOG2E = 1.4426950408889634


def torch_bn_stats(logits: Tensor, state: contract.BatchNormState) -> tuple[Tensor, Tensor]:
    """AttentionResidualBackend.bn_stats (kernels.contract): a sum, then a centred sum of squares."""
    running_mean, running_var, momentum, eps = state
    acc = acc_dtype(logits)
    total = logits.numel() // logits.shape[1]
    mean = logits.sum(_DIMS, dtype=acc).div_(total)
    # two passes (centred sum of squares): as accurate as Welford and much faster on CPU than var_mean
    var = (logits - mean.reshape(1, -1, 1, 1)).square_().sum(_DIMS).div_(total)
    if running_mean is not None and running_var is not None:
        unbias = total / max(total - 1, 1)
        if running_mean.dtype == acc and running_var.dtype == acc:
            running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
            running_var.mul_(1 - momentum).add_(var, alpha=momentum * unbias)
        else:
            running_mean.copy_(running_mean.to(acc) * (1 - momentum) + mean * momentum)
            running_var.copy_(running_var.to(acc) * (1 - momentum) + var * (momentum * unbias))
    return mean, var.add_(eps).rsqrt_()


def _scaled_logits(
    logits: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor
) -> torch.Tensor:
    """relu(z) * log2(e) with z = (logits - mean) * rstd * weight + bias, in mean's dtype (a new tensor).

    Scaling by log2(e) (folded into the per-channel affine; positive, so the relu mask is unchanged)
    lets the softmax use exp2, much faster than exp on CPU; it is also what tl.exp compiles to on GPUs.
    The affine is one pass of batch norm's inference kernel: unit variance and eps 0 make its
    per-channel factor exactly `scale`.
    """
    acc = mean.dtype
    scale = (rstd * _LOG2E).mul_(weight)
    if logits.dtype != acc:
        logits = logits.to(acc)
    z = torch.native_batch_norm(logits, scale, bias.to(acc) * _LOG2E, mean, torch.ones_like(mean), False, 0.0, 0.0)[0]
    return z.clamp_min_(0)


def _softmax2(z2: torch.Tensor, inplace: bool) -> torch.Tensor | None:
    """softmax over dim 1 of z2 / log2(e) for z2 >= 0 as 2^z2 / sum_c 2^z2 (in z2's memory if inplace).

    z2 >= 0 (after the relu) means 2^z2 >= 1 never underflows, so no per-position max is needed unless
    the sum overflows (z2 near 128, rare): then this returns None and the caller uses _softmax2_shifted.
    Off the CPU (a GPU running the torch backend: fp64 under "auto", or --ops-backend torch) the
    shifted softmax always: testing the sum for overflow reads a value back, a host sync in every step.
    """
    if z2.device.type != "cpu":
        return _softmax2_shifted(z2)
    e = z2.exp2_() if inplace else z2.exp2()
    total = e.sum(dim=1, keepdim=True)
    if not bool(total.isfinite().all()):
        return None
    return e.div_(total)  # a division (not a reciprocal): exact 1 for a single channel


def _softmax2_shifted(z2: torch.Tensor) -> torch.Tensor:
    """softmax over dim 1 of z2 / log2(e) with the per-position max subtracted (a new tensor)."""
    e = (z2 - z2.amax(dim=1, keepdim=True)).exp2_()
    return e.div_(e.sum(dim=1, keepdim=True))


def torch_forward(t: contract.ResidualTensors) -> Tensor:
    """AttentionResidualBackend.forward (kernels.contract): whole-tensor ATen kernels, softmax by exp2."""
    x, logits, weight, bias, mean, rstd = t
    m = _softmax2(_scaled_logits(logits, weight, bias, mean, rstd), inplace=True)
    if m is None:
        m = _softmax2_shifted(_scaled_logits(logits, weight, bias, mean, rstd))
    out = empty_ncp_like(x)
    if x.dtype == m.dtype:
        torch.addcmul(x, x, m, out=out)  # x * (1 + m)
    else:
        torch.mul(x, m.add_(1), out=out)
    return out


def torch_backward(
    grad: Tensor, t: contract.ResidualTensors, want: contract.ResidualGrads
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """AttentionResidualBackend.backward (kernels.contract): softmax's, relu's and batch norm's own
    backward kernels (with sync_means, dlogits centred with the global means afterwards)."""
    x, logits, weight, bias, mean, rstd = t
    need_x, need_logits, batch_stats, sync_means = want
    acc = mean.dtype
    lg = logits.to(acc)  # a copy only for half-precision logits, then reused by the batch-norm backward
    zr = _scaled_logits(lg, weight, bias, mean, rstd)
    m = _softmax2(zr, inplace=False)
    if m is None:
        m = _softmax2_shifted(zr)
    dx = x.new_empty(0)
    if need_x:
        dx = empty_ncp_like(x)
        torch.addcmul(grad, grad, m, out=dx)  # grad * (1 + m)
    dm = grad.to(acc)
    dm = dm.mul_(x) if dm is not grad else grad * x  # d out / d m
    dz = torch._softmax_backward_data(dm, m, 1, acc)
    del dm, m
    dz = torch.ops.aten.threshold_backward.grad_input(dz, zr, 0, grad_input=dz)  # relu: where z > 0
    del zr
    w = weight.to(acc)
    mask = [need_logits, True, True]
    if batch_stats and sync_means is None:
        dl, dw, db = torch.ops.aten.native_batch_norm_backward(dz, lg, w, None, None, mean, rstd, True, 0.0, mask)
    else:  # fixed statistics: var = rstd^-2 with eps 0 reproduces invstd = rstd
        var = rstd.reciprocal().square_()
        dl, dw, db = torch.ops.aten.native_batch_norm_backward(dz, lg, w, mean, var, None, None, False, 0.0, mask)
        if batch_stats and need_logits:  # synchronised: dl = w*rstd*(dz - mean(dz) - xhat*mean(dz*xhat))
            gs, gsx = sync_means(torch.stack((db, dw)))
            gain = w * rstd
            dl.sub_((gain * gs).reshape(1, -1, 1, 1))
            dl.sub_((lg - mean.reshape(1, -1, 1, 1)).mul_((gain * rstd * gsx).reshape(1, -1, 1, 1)))
    if need_logits:
        dl = like_layout(dl, logits).to(logits.dtype) if dl.dtype != logits.dtype else like_layout(dl, logits)
    else:
        dl = logits.new_empty(0)
    return dx, dl, dw.to(weight.dtype), db.to(bias.dtype)


# ------------------------------------------------------------------------------ torch.library ops


def _impl(backend: str) -> Any:
    """The contract.AttentionResidualBackend of `backend` ("torch" or "triton")."""
    if backend == "triton":
        return triton_kernels("attention_residual")
    return _TorchMath


class _TorchMath:
    """The torch backend under the launchers' names."""

    bn_stats = staticmethod(torch_bn_stats)
    forward = staticmethod(torch_forward)
    backward = staticmethod(torch_backward)


@torch.library.custom_op("ddakern::bn_stats", mutates_args=("running_mean", "running_var"))
def _bn_stats_op(
    logits: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    batch_stats: bool,
    momentum: float,
    eps: float,
    backend: str,
) -> tuple[Tensor, Tensor]:
    """Per-channel (mean, rstd) of the batch (batch_stats) or of the running statistics.

    fp32 (fp64 for fp64 logits); mutates the running statistics when batch_stats and they are given.
    Not differentiable: callers pass detached logits, and the gradient through the statistics is part
    of attention_residual's backward.
    """
    acc = acc_dtype(logits)
    if not batch_stats:
        assert running_mean is not None and running_var is not None
        return running_mean.to(acc, copy=True), torch.rsqrt(running_var.to(acc) + eps)
    impl = _impl(backend) if acc == torch.float32 else _TorchMath
    return impl.bn_stats(logits, contract.BatchNormState(running_mean, running_var, momentum, eps))


@_bn_stats_op.register_fake
def _(logits, running_mean, running_var, batch_stats, momentum, eps, backend):
    c = logits.shape[1]
    acc = acc_dtype(logits)
    return logits.new_empty((c,), dtype=acc), logits.new_empty((c,), dtype=acc)


@torch.library.custom_op("ddakern::attention_residual", mutates_args=())
def _forward_op(
    x: Tensor, logits: Tensor, weight: Tensor, bias: Tensor, mean: Tensor, rstd: Tensor, batch_stats: bool, backend: str
) -> Tensor:
    """x * (1 + softmax_c(relu((logits - mean) * rstd * weight + bias)))."""
    return _impl(backend).forward(contract.ResidualTensors(x, logits, weight, bias, mean, rstd))


@_forward_op.register_fake
def _(x, logits, weight, bias, mean, rstd, batch_stats, backend):
    return empty_ncp_like(x)


@torch.library.custom_op("ddakern::attention_residual_backward", mutates_args=())
def _backward_op(
    grad: Tensor,
    x: Tensor,
    logits: Tensor,
    weight: Tensor,
    bias: Tensor,
    mean: Tensor,
    rstd: Tensor,
    batch_stats: bool,
    need_x: bool,
    need_logits: bool,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dx, dlogits, dweight, dbias); dx / dlogits are empty tensors when not needed."""
    tensors = contract.ResidualTensors(x, logits, weight, bias, mean, rstd)
    return _impl(backend).backward(grad, tensors, contract.ResidualGrads(need_x, need_logits, batch_stats))


@_backward_op.register_fake
def _(grad, x, logits, weight, bias, mean, rstd, batch_stats, need_x, need_logits, backend):
    dx = empty_ncp_like(x) if need_x else x.new_empty(0)
    dl = empty_ncp_like(logits) if need_logits else logits.new_empty(0)
    return dx, dl, torch.empty_like(weight), torch.empty_like(bias)


def _setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
    x, logits, weight, bias, mean, rstd, batch_stats, backend = inputs
    ctx.save_for_backward(x, logits, weight, bias, mean, rstd)
    ctx.batch_stats = batch_stats
    ctx.backend = backend


def _autograd_backward(ctx: Any, grad: Tensor) -> tuple:
    x, logits, weight, bias, mean, rstd = ctx.saved_tensors
    need = ctx.needs_input_grad
    grads = _backward_op(grad, x, logits, weight, bias, mean, rstd, ctx.batch_stats, need[0], need[1], ctx.backend)
    return (*(g if n else None for g, n in zip(grads, need[:4], strict=True)), None, None, None, None)


_forward_op.register_autograd(_autograd_backward, setup_context=_setup_context)


# ------------------------------------------------------------------- synchronised batch statistics


class _Synced(torch.autograd.Function):
    """The torch / triton backend's op with batch statistics over a process group (ddakern.ops.sync_bn).

    The same launchers as the custom ops: local statistics, one all-gather, the fused forward with the
    global (mean, rstd); the backward's two passes with its per-channel sums all-reduced in between
    (the Triton path stays fused). Runs eagerly: a callable and a process group cannot pass through
    a torch.library op, so torch.compile breaks the graph here (`_synced`).
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        logits: Tensor,
        weight: Tensor,
        bias: Tensor,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        momentum: float,
        eps: float,
        group: ProcessGroup,
        backend: str,
    ) -> Tensor:
        impl = _impl(backend)
        stats = impl if acc_dtype(logits) == torch.float32 else _TorchMath
        mean, rstd = stats.bn_stats(logits, contract.BatchNormState(None, None, momentum, eps))
        mean, var, total = sync_bn.gather_stats(mean, rstd, logits.numel() // logits.shape[1], eps, group)
        if running_mean is not None and running_var is not None:
            sync_bn.update_running(running_mean, running_var, mean, var, total, momentum)
        rstd = var.add_(eps).rsqrt_()
        ctx.save_for_backward(x, logits, weight, bias, mean, rstd, total)
        ctx.group = group
        ctx.backend = backend
        return impl.forward(contract.ResidualTensors(x, logits, weight, bias, mean, rstd))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:
        *tensors, total = ctx.saved_tensors
        need = ctx.needs_input_grad
        group = ctx.group

        def means(sums: Tensor) -> Tensor:
            return sync_bn.global_means(sums, total, group)

        want = contract.ResidualGrads(need[0], need[1], True, means)
        grads = _impl(ctx.backend).backward(grad, contract.ResidualTensors(*tensors), want)
        return (*(g if n else None for g, n in zip(grads, need[:4], strict=True)), *(None,) * 6)


def _apply_synced(*args: Any) -> Tensor:
    return _Synced.apply(*args)


_synced = getattr(torch, "_disable_dynamo", torch.compiler.disable)(_apply_synced)
"""_Synced, run eagerly (a graph break under torch.compile: collectives and launchers in Python). torch's
lazy form of `torch.compiler.disable` (what torch's own optimisers use) where it exists: the eager one
imports torch._dynamo (and sympy) when ddakern is imported, 1.7 of the 5.7 s every process pays here."""


# --------------------------------------------------------------------------------------- public op


def _check(x: object, logits: object, per_channel: dict[str, Tensor | None], training: bool) -> tuple[Tensor, Tensor]:
    """Checked (x, logits); per_channel holds bn_weight, bn_bias, running_mean, running_var (or None)."""
    x = check_x(x, OP)
    logits = check_arg("logits", logits, x, (tuple(x.shape),), OP)
    c = x.shape[1]
    for name, t in per_channel.items():
        if t is not None:
            check_arg(name, t, x, ((c,),), OP, same_dtype=False)
    if (per_channel["running_mean"] is None) != (per_channel["running_var"] is None):
        raise ValueError(f"{OP}: give both running_mean and running_var or neither")
    if (training or per_channel["running_mean"] is None) and x.numel() // c < 2:
        raise ValueError(f"{OP}: batch statistics need more than 1 value per channel, got shape {tuple(x.shape)}")
    return x, logits


def attention_residual(
    x: Tensor,
    logits: Tensor,
    bn_weight: Tensor | None,
    bn_bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
    process_group: ProcessGroup | None = None,
) -> Tensor:
    """x * (1 + softmax_c(relu(batch_norm(logits)))): DDA's mask head fused with the residual.

    Batch norm uses batch statistics when `training` (or when no running statistics are given) and
    then updates running_mean / running_var in place like nn.BatchNorm2d; otherwise the running ones.
    With `process_group`, batch statistics are those of every rank's batch in it, as nn.SyncBatchNorm
    computes them (ddakern.ops.sync_bn). The backend is ddakern.dispatch's ("reference" runs `reference`).
    """
    params = dict(bn_weight=bn_weight, bn_bias=bn_bias, running_mean=running_mean, running_var=running_var)
    x, logits = _check(x, logits, params, training)
    backend = backend_for(x)
    if backend == "reference":
        return reference(
            x, logits, bn_weight, bn_bias, running_mean, running_var, training, momentum, eps, process_group
        )
    c = x.shape[1]
    batch_stats = bool(training) or running_mean is None
    weight = bn_weight if bn_weight is not None else torch.ones(c, device=x.device, dtype=torch.float32)
    bias = bn_bias if bn_bias is not None else torch.zeros(c, device=x.device, dtype=torch.float32)
    if batch_stats and process_group is not None:
        args = (running_mean, running_var, float(momentum), float(eps), process_group, backend)
        return _synced(x, logits, weight, bias, *args)
    mean, rstd = torch.ops.ddakern.bn_stats(
        logits.detach(), running_mean, running_var, batch_stats, float(momentum), float(eps), backend
    )
    return torch.ops.ddakern.attention_residual(x, logits, weight, bias, mean, rstd, batch_stats, backend)


def _call(fn: Callable[..., Tensor], t: Mapping[str, Tensor], variant: str) -> Tensor:
    """fn with batch statistics ("train", updating the running ones) or the running statistics ("eval")."""
    stats = (t["running_mean"], t["running_var"])
    return fn(t["x"], t["logits"], t["weight"], t["bias"], *stats, variant == "train")


SPEC = registry.register(
    registry.OpSpec(OP, attention_residual, reference, _call, variants=("train", "eval"), checked="train", inputs=(
        registry.Input("logits", "map", init=("normal", 0.0, 2.0)),
        registry.Input("weight", "channels", "fp32", ("uniform", 0.5, 1.5)),  # batch-norm affine stays fp32
        registry.Input("bias", "channels", "fp32", ("normal", 0.0, 0.3)),
        registry.Input("running_mean", "channels", "fp32", ("fill", 0.0, 0.0), grad=False),
        registry.Input("running_var", "channels", "fp32", ("fill", 1.0, 0.0), grad=False),
    ))
)  # fmt: skip
