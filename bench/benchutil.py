"""Benchmark sizes and timing helpers: CUDA-sized runs on a GPU, scaled-down runs on CPU."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pytest
import torch

from ddakern.models import create
from ddakern.profiling import saved_tensor_bytes

RESNET34_STAGES = ((64, 56), (128, 28), (256, 14), (512, 7))
RESNET50_STAGES = ((256, 56), (512, 28), (1024, 14), (2048, 7))


@dataclass(frozen=True)
class Scale:
    """Sizes for the benchmarks on this device."""

    device: torch.device
    batch: int
    image_size: int
    rounds: int
    cuda: bool
    # fused-op benchmarks: (host, channels, height = width) at kernel_batch, calls per timed round
    kernel_shapes: tuple[tuple[str, int, int], ...] = ()
    kernel_batch: int = 1
    kernel_rounds: int = 1
    kernel_calls: int = 1
    # DDA block benchmark: (host, channels, stage, size)
    block_shapes: tuple[tuple[str, int, int, int], ...] = ()
    # input pipelines: samples per timed epoch, batch size, output size, loader threads
    data_samples: int = 0
    data_batch: int = 1
    data_image_size: int = 1
    data_threads: int = 1
    data_rounds: int = 1


def bench_scale() -> Scale:
    """The real DDA sizes on CUDA; batch 4, 1/4 spatial size and a subset of the stages on CPU."""
    if torch.cuda.is_available():
        return Scale(
            torch.device("cuda"),
            batch=48,
            image_size=224,
            rounds=20,
            cuda=True,
            kernel_shapes=tuple(("resnet34", c, s) for c, s in RESNET34_STAGES)
            + tuple(("resnet50", c, s) for c, s in RESNET50_STAGES),
            kernel_batch=48,
            kernel_rounds=20,
            kernel_calls=10,
            block_shapes=(("resnet34", 64, 1, 56), ("resnet50", 1024, 3, 14)),
            data_samples=480,
            data_batch=48,
            data_image_size=224,
            data_threads=min(8, os.cpu_count() or 1),
            data_rounds=3,
        )
    return Scale(
        torch.device("cpu"),
        batch=4,
        image_size=64,
        rounds=3,
        cuda=False,
        # ResNet-34 stage 1 and ResNet-50 stage 3 at 1/4 size (overhead-bound), ResNet-34 stage 1 at full size
        kernel_shapes=(("resnet34", 64, 14), ("resnet50", 1024, 4), ("resnet34", 64, 56)),
        kernel_batch=4,
        kernel_rounds=15,
        kernel_calls=1,
        block_shapes=(("resnet34", 64, 1, 14),),
        data_samples=192,
        data_batch=32,
        data_image_size=224,  # the training size: decoding and augmenting at full size is cheap enough
        data_threads=2,
        data_rounds=3,
    )


SCALE = bench_scale()
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def sync() -> None:
    """Wait for queued CUDA work (no-op on CPU)."""
    if SCALE.cuda:
        torch.cuda.synchronize()


def peak_memory_reset() -> None:
    """Start a new CUDA peak-memory window (no-op on CPU)."""
    if SCALE.cuda:
        torch.cuda.reset_peak_memory_stats()


def peak_memory_bytes() -> int | None:
    """Peak CUDA memory since the last reset (None on CPU, where it is not tracked per run)."""
    return torch.cuda.max_memory_allocated() if SCALE.cuda else None


def median_s(benchmark) -> float | None:
    """Median seconds per round of a finished benchmark (None under --benchmark-disable)."""
    stats = getattr(benchmark, "stats", None)
    if stats is None or getattr(stats, "stats", None) is None:
        return None
    return stats.stats.median


def skip_compile_if_disabled(benchmark) -> None:
    """torch.compile on a 2-core CPU takes tens of seconds: --benchmark-disable (the CI smoke run) skips it."""
    if benchmark.disabled and not SCALE.cuda:
        pytest.skip("torch.compile variants are skipped on CPU under --benchmark-disable (compile time only)")


def assert_finite(name: str, t: torch.Tensor, shape: Sequence[int] | None = None) -> None:
    """A benchmark result must have the expected shape and hold no NaN/inf (the message names the result)."""
    if shape is not None:
        assert tuple(t.shape) == tuple(shape), f"{name}: shape {tuple(t.shape)}, expected {tuple(shape)}"
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise AssertionError(f"{name}: {bad} of {t.numel()} values are NaN or inf")


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """Max abs error relative to the reference's max magnitude (computed in the wider dtype, at least fp32);
    0 for the reference itself."""
    if a is ref:
        return 0.0
    wide = torch.promote_types(torch.promote_types(a.dtype, ref.dtype), torch.float32)
    a, ref = a.to(wide), ref.to(wide)
    return ((a - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


def assert_matches_reference(
    got: Mapping[str, torch.Tensor],
    same_dtype: Mapping[str, torch.Tensor],
    exact: Mapping[str, torch.Tensor],
    floor: float = 1e-5,
) -> None:
    """Each result finite, of the reference's shape and dtype, and as close to the exact (float64) reference as
    the reference run in the same dtype (at most twice its error, or `floor` relative): the project's bar.
    Pass the same mapping twice where one run is both (the reference variant; fp32 where fp32 is exact)."""
    assert got.keys() == same_dtype.keys() == exact.keys(), f"results {sorted(got)}, reference {sorted(exact)}"
    for name, t in got.items():
        assert_finite(name, t, same_dtype[name].shape)
        assert t.dtype == same_dtype[name].dtype, f"{name}: dtype {t.dtype}, reference {same_dtype[name].dtype}"
        ours, theirs = rel_err(t, exact[name]), rel_err(same_dtype[name], exact[name])
        assert ours <= max(floor, 2 * theirs), (
            f"{name}: relative error {ours:.3g} vs the {exact[name].dtype} reference, "
            f"the {t.dtype} reference's is {theirs:.3g}"
        )


# whole-step variants (bench/test_bench_step.py, bench/step_ratios.py, bench/gpu_stage3.py)
VARIANTS: dict[str, dict] = {
    "eager": {},
    "fused": {"fused": True},
    "recompute-dda": {"recompute": "dda"},
    "fused+recompute-dda": {"fused": True, "recompute": "dda"},
    "recompute-all": {"recompute": "all"},
    "channels_last": {"channels_last": True},
    "compile": {"compile": True},
}


def make_step(
    name: str,
    opts: dict,
    batch: int = SCALE.batch,
    image_size: int = SCALE.image_size,
    device: torch.device = SCALE.device,
    amp: bool | None = None,
) -> tuple[Callable[[], torch.Tensor], Callable[[], int], torch.nn.Module]:
    """(one RAdam step returning its loss, activation bytes of its forward, the model) of model `name`
    with the variant options `opts`; `amp` (default: on CUDA) runs the forward in bf16 autocast."""
    amp = device.type == "cuda" if amp is None else amp
    torch.manual_seed(0)
    model = create(name, fused_ops=bool(opts.get("fused")), recompute=opts.get("recompute", "none"))
    model = model.to(device).train()
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    y = torch.randint(0, 7, (batch,), device=device)
    if opts.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if opts.get("compile") else model
    optimizer = torch.optim.RAdam(model.parameters(), lr=1e-4, weight_decay=1e-3)

    def loss_of(inp: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            return torch.nn.functional.cross_entropy(forward(inp).float(), y)

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(x)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return loss.detach()

    def saved() -> int:
        return saved_tensor_bytes(loss_of, x, exclude=list(model.parameters()))

    return step, saved, model
