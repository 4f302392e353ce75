"""Recompute modes (ddakern.recompute) against the non-recomputed step: outputs, gradients, BN statistics."""

from __future__ import annotations

import copy
import json
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from ddp_launch import two_ranks
from torch import nn

import ddakern
from ddakern import DDA, models, recompute
from ddakern.ensemble import create_ensemble
from ddakern.profiling import saved_tensor_bytes

ROOT = Path(__file__).resolve().parents[1]


def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """One forward/backward from a fixed RNG state (the classifier's dropout draws from it); the
    output, every parameter gradient and every buffer afterwards."""
    torch.manual_seed(1234)
    out = model(x)
    F.cross_entropy(out.float(), y).backward()
    state = {"out": out.detach().clone()}
    state.update({f"grad.{k}": p.grad.clone() for k, p in model.named_parameters()})
    state.update({f"buf.{k}": b.clone() for k, b in model.named_buffers()})
    return state


def differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return sorted(k for k in a if not torch.equal(a[k], b[k]))


def batch(n: int = 2, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=gen), torch.randint(0, 7, (n,), generator=gen)


@pytest.fixture(scope="module")
def base() -> nn.Module:
    torch.manual_seed(0)
    return models.create("resnet18_dda", dda_stages=(2, 4)).train()


@pytest.mark.parametrize("mode,layout", [("dda", "nchw"), ("all", "nchw"), ("dda", "channels_last")])
def test_recomputed_step_is_bitwise_the_plain_step(base, mode, layout) -> None:
    x, y = batch()
    if layout == "channels_last":
        base = copy.deepcopy(base).to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model = copy.deepcopy(base)
    model.set_grad_checkpointing(mode)
    ref = step(copy.deepcopy(base), x, y)
    plain_rng_after = torch.get_rng_state()
    got = step(model, x, y)
    assert differing(ref, got) == []
    assert torch.equal(torch.get_rng_state(), plain_rng_after)  # recomputation draws nothing extra
    assert got["buf.dda2.head.bn.num_batches_tracked"].item() == 1


def test_plain_checkpoint_would_update_batch_norm_twice(base) -> None:
    """Why ddakern.recompute exists: torch.utils.checkpoint alone advances the statistics again."""
    block = copy.deepcopy(base.dda2)
    assert block is not None
    x = torch.randn(2, block.in_channels, 8, 8, requires_grad=True)
    torch.utils.checkpoint.checkpoint(block.attend, x, use_reentrant=False).sum().backward()
    assert block.head.bn.num_batches_tracked.item() == 2
    exact = copy.deepcopy(base.dda2)
    exact.recompute = True
    exact(x).sum().backward()
    assert exact.head.bn.num_batches_tracked.item() == 1


@pytest.mark.parametrize("backend", ["torch"])
def test_fused_ops_with_recompute(base, backend) -> None:
    x, y = batch(seed=1)
    fused = copy.deepcopy(base)
    for m in fused.modules():
        if isinstance(m, DDA):
            m.fused_ops = True
    with ddakern.use_ops_backend(backend):
        ref = step(copy.deepcopy(fused), x, y)
        fused.set_grad_checkpointing("dda")
        assert differing(ref, step(fused, x, y)) == []


def test_bf16_autocast_and_channels_last(base) -> None:
    x, y = batch(seed=2, size=32)
    x = x.contiguous(memory_format=torch.channels_last)
    plain = copy.deepcopy(base).to(memory_format=torch.channels_last)
    model = copy.deepcopy(plain)
    model.set_grad_checkpointing("dda")
    truth = step(copy.deepcopy(plain), x, y)  # fp32: the yardstick
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = step(plain, x, y)
        got = step(model, x, y)
    assert ref["out"].dtype == torch.bfloat16
    # oneDNN's bf16 convolutions are not bitwise repeatable run to run on CPU, so the project's rule for
    # low precision: the recomputed step's error against fp32 is at most 2x the plain bf16 step's
    assert too_far(got, ref, truth) == []


def too_far(got: dict, ref: dict, truth: dict) -> list[str]:
    def err(a: torch.Tensor, t: torch.Tensor) -> float:
        t = t.double()
        return float((a.double() - t).norm() / t.norm().clamp_min(1e-12))

    return sorted(k for k in truth if err(got[k], truth[k]) > 2 * err(ref[k], truth[k]) + 1e-6)


def test_torch_compile_updates_statistics_once() -> None:
    torch.manual_seed(3)
    block = DDA(16, 4).train()
    x0 = torch.randn(2, 16, 6, 6)

    def run(module: nn.Module, compiled: bool) -> dict[str, torch.Tensor]:
        fn = torch.compile(module, backend="aot_eager") if compiled else module
        x = x0.clone().requires_grad_()
        out = fn(x)
        out.square().sum().backward()
        state = {"out": out.detach(), "dx": x.grad}
        state.update({f"grad.{k}": p.grad for k, p in module.named_parameters()})
        state.update({f"buf.{k}": b.clone() for k, b in module.named_buffers()})
        return state

    ref = run(copy.deepcopy(block), compiled=False)
    block.recompute = True
    got = run(block, compiled=True)
    assert [k for k in differing(ref, got) if k.startswith("buf.")] == []
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-6, atol=1e-7)


def conv_bn_relu_pool() -> nn.Sequential:
    torch.manual_seed(4)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.Conv2d(8, 5, 3, stride=2, padding=1), nn.BatchNorm2d(5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
    ).train()  # fmt: skip


def run_region(seq: nn.Module, x: torch.Tensor, keep: str | None, compiled: bool = False) -> dict:
    """Output, gradients and buffers after one backward of `seq` (plain when keep is None)."""

    def fn(inp: torch.Tensor) -> torch.Tensor:
        return seq(inp) if keep is None else recompute.checkpoint(seq, seq, inp, keep=keep)

    out = (torch.compile(fn, backend="aot_eager") if compiled else fn)(x)
    out.square().sum().backward()
    state = {"out": out.detach(), "dx": x.grad.clone()}
    state.update({f"grad.{k}": p.grad.clone() for k, p in seq.named_parameters()})
    state.update({f"buf.{k}": b.clone() for k, b in seq.named_buffers()})
    return state


def test_selective_region_keeps_only_convolution_outputs() -> None:
    seq = conv_bn_relu_pool()
    x = torch.randn(2, 3, 9, 7)
    kept = saved_tensor_bytes(
        lambda t: recompute.checkpoint(seq, seq, t, keep="convolutions"), x, exclude=seq.parameters()
    )
    conv1 = seq[0](x)
    conv2 = seq[3](seq[2](seq[1](conv1)))
    if recompute._HOOKS_KW:  # torch < 2.14: what a selective region keeps bypasses the counting hooks
        assert kept == 4 * (x.numel() + conv1.numel() + conv2.numel())  # the input and the two convolutions
        assert kept < saved_tensor_bytes(seq, x, exclude=seq.parameters())
    ref = run_region(conv_bn_relu_pool(), x.clone().requires_grad_(), None)
    got = run_region(conv_bn_relu_pool(), x.clone().requires_grad_(), "convolutions")
    assert differing(ref, got) == []  # bitwise, BN statistics updated once (num_batches_tracked == 1)
    assert got["buf.1.num_batches_tracked"].item() == 1


def module_macs_per_output(conv: nn.Module) -> float:
    """Multiply-adds per output element, from the module's own attributes (not the aten arguments)."""
    taps = conv.kernel_size[0] * conv.kernel_size[1] * conv.in_channels / conv.groups
    if isinstance(conv, nn.ConvTranspose2d):
        return taps / (conv.stride[0] * conv.stride[1])
    return taps


@pytest.mark.skipif(not recompute._HOOKS_KW, reason="torch < 2.14: kept tensors bypass the counting hooks")
def test_dda_block_keeps_exactly_its_costly_convolutions() -> None:
    torch.manual_seed(5)
    block = DDA(16, 3).train()  # cheap: convolutions of the 16-channel x, 1x1s; costly: wide 3x3s
    x = torch.randn(2, 16, 9, 9)
    outputs: dict[str, tuple[float, int]] = {}

    def note(m: nn.Module, inputs: tuple, out: torch.Tensor, name: str) -> None:
        outputs[name] = (module_macs_per_output(m), out.numel())

    convs = [(n, m) for n, m in block.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    hooks = [m.register_forward_hook(partial(note, name=n)) for n, m in convs]
    with torch.no_grad():
        block(x)
    for h in hooks:
        h.remove()
    costly = {n: numel for n, (macs, numel) in outputs.items() if macs >= recompute.COSTLY_MACS}
    assert 0 < len(costly) < len(outputs) and "layers.conv" not in costly and "layers.layer4.1.conv2" in costly
    block.recompute = True
    kept = saved_tensor_bytes(block, x, exclude=block.parameters())
    assert kept == 4 * (x.numel() + sum(costly.values()))
    plain = copy.deepcopy(block)
    plain.recompute = False
    xs = [x.clone().requires_grad_() for _ in range(2)]
    outs = [m(t) for m, t in zip((plain, block), xs)]
    for o in outs:
        o.square().sum().backward()
    assert torch.equal(outs[0], outs[1]) and torch.equal(xs[0].grad, xs[1].grad)
    assert differing(dict(plain.named_buffers()), dict(block.named_buffers())) == []
    assert (
        differing({n: p.grad for n, p in plain.named_parameters()}, {n: p.grad for n, p in block.named_parameters()})
        == []
    )


def test_checkpoint_names_an_unknown_keep() -> None:
    seq = conv_bn_relu_pool()
    with pytest.raises(ValueError, match="keep must be 'nothing' or one of convolutions, costly-convolutions"):
        recompute.checkpoint(seq, seq, torch.randn(2, 3, 8, 8), keep="everything")


def test_selective_region_under_torch_compile() -> None:
    x = torch.randn(2, 3, 8, 8)
    ref = run_region(conv_bn_relu_pool(), x.clone().requires_grad_(), None)
    got = run_region(conv_bn_relu_pool(), x.clone().requires_grad_(), "convolutions", compiled=True)
    assert [k for k in differing(ref, got) if k.startswith("buf.")] == []
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-6, atol=1e-7)


def test_saved_bytes_drop(base) -> None:
    x, _ = batch(n=2, size=32)
    model = copy.deepcopy(base)
    sizes = {}
    for mode in recompute.MODES:
        model.set_grad_checkpointing(mode)
        sizes[mode] = saved_tensor_bytes(model, x)
    assert sizes["all"] < sizes["dda"] < 0.6 * sizes["none"]
    assert sizes["all"] >= x.numel() * 4  # the kept stage inputs are counted, the image included


def test_no_recompute_without_grad(base) -> None:
    model = copy.deepcopy(base)
    model.set_grad_checkpointing("all")
    x, _ = batch()
    with torch.no_grad():
        out = model(x)
    assert not out.requires_grad


def test_vgg_ensemble_and_create() -> None:
    torch.manual_seed(4)
    x, y = batch(seed=4)
    vgg = models.create("vgg11_bn")
    ref = step(copy.deepcopy(vgg), x, y)
    vgg.set_grad_checkpointing("all")
    assert differing(ref, step(vgg, x, y)) == []
    assert models.create("resnet18_dda", recompute="dda").dda3.recompute
    ens = create_ensemble(
        "joint", models.create("resnet18_dda", dda_stages=(4,)), models.create("resnet18"), num_classes=7
    )
    ens.set_grad_checkpointing("all")
    assert ens.member1.recompute == ens.member2.recompute == "all"
    with pytest.raises(ValueError, match="recompute mode must be one of"):
        models.create("resnet18_dda", recompute="some")


def test_set_recompute_on_a_model_without_setter() -> None:
    class Host(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dda = DDA(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.dda(x)

    host = recompute.set_recompute(Host(), "dda")
    assert host.dda.recompute
    with pytest.raises(ValueError, match="needs a model with set_grad_checkpointing"):
        recompute.set_recompute(host, "all")


def test_ddp_two_processes_gloo(tmp_path) -> None:
    out = tmp_path / "ddp"
    p = two_ranks(str(ROOT / "tests" / "recompute_ddp_worker.py"), str(out))
    assert p.returncode == 0, p.stderr[-3000:]
    for rank in (0, 1):
        result = json.loads(Path(f"{out}.rank{rank}").read_text(encoding="utf-8"))
        assert result == {"dda": [], "all": []}
