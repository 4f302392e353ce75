"""One training step of resnet34/50 with and without DDA: fused kernels, AMP, channels_last, compile.

Ratios are against the `eager` variant of the same model in the same run (`group` = model). Each
benchmark also records the bytes the forward saves for backward (not for compile variants), images/s and,
on CUDA, the peak memory of the step. On CPU resnet50_dda (196M parameters) runs eager and fused only.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from benchutil import SCALE, median_s, peak_memory_bytes, peak_memory_reset, skip_compile_if_disabled, sync

from ddakern.models import create
from ddakern.profiling import saved_tensor_bytes

VARIANTS = {
    "eager": {},
    "fused": {"fused": True},
    "amp": {"amp": True},
    "fused+amp": {"fused": True, "amp": True},
    "channels_last": {"channels_last": True},
    "compile": {"compile": True},
}
MODELS = ["resnet34", "resnet34_dda", "resnet50", "resnet50_dda"]
CPU_ONLY_VARIANTS = {"resnet50_dda": ("eager", "fused")}  # 196M parameters: seconds per step on 2 cores


def cases():
    for model in MODELS:
        for variant, opts in VARIANTS.items():
            if opts.get("fused") and not model.endswith("_dda"):
                continue
            if not SCALE.cuda and variant not in CPU_ONLY_VARIANTS.get(model, VARIANTS):
                continue
            if opts.get("compile") and not SCALE.cuda and model != "resnet34":
                continue  # Inductor on 2 CPU cores takes minutes for the DDA graphs; CUDA runs them all
            yield pytest.param(model, variant, id=f"{model}-{variant}")


def make_step(name: str, opts: dict) -> tuple[Callable[[], None], Callable[[], int]]:
    """(one optimizer step, bytes its forward saves for backward) of `name` with the variant's options."""
    model = create(name, fused_ops=bool(opts.get("fused"))).to(SCALE.device).train()
    x = torch.randn(SCALE.batch, 3, SCALE.image_size, SCALE.image_size, device=SCALE.device)
    y = torch.randint(0, 7, (SCALE.batch,), device=SCALE.device)
    if opts.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if opts.get("compile") else model
    optimizer = torch.optim.RAdam(model.parameters(), lr=1e-4, weight_decay=1e-3)
    amp_dtype = torch.bfloat16

    def loss_of(inp: torch.Tensor) -> torch.Tensor:
        with torch.autocast(SCALE.device.type, dtype=amp_dtype, enabled=bool(opts.get("amp"))):
            return torch.nn.functional.cross_entropy(forward(inp), y)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_of(x).backward()
        optimizer.step()
        sync()

    def saved() -> int:
        return saved_tensor_bytes(loss_of, x)

    return step, saved


@pytest.mark.parametrize("name,variant", list(cases()))
def test_train_step(benchmark, name: str, variant: str) -> None:
    if VARIANTS[variant].get("compile"):
        skip_compile_if_disabled(benchmark)
    step, saved = make_step(name, VARIANTS[variant])
    if not benchmark.disabled:  # --benchmark-disable runs the step once: no warm-up needed
        step()  # warm-up (and compilation)
    benchmark.group = f"train-step {name}"
    benchmark.extra_info.update(
        {
            "table": "training step",
            "model": name,
            "variant": variant,
            "baseline": "eager",
            "batch": SCALE.batch,
            "image_size": SCALE.image_size,
            "device": str(SCALE.device),
        }
    )
    if not VARIANTS[variant].get("compile"):  # saved-tensor hooks would be one more compile
        benchmark.extra_info["saved_bytes"] = saved()
    peak_memory_reset()
    benchmark.pedantic(step, rounds=SCALE.rounds, iterations=1)
    med = median_s(benchmark)
    if med is not None:
        benchmark.extra_info["images_per_s"] = SCALE.batch / med
    benchmark.extra_info["peak_memory_bytes"] = peak_memory_bytes()
