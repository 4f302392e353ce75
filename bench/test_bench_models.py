"""One training step of resnet34/50 with and without DDA: fused kernels, AMP, channels_last, compile.

Ratios are against the `eager` variant of the same model in the same run (`group` = model).
"""

from __future__ import annotations

import pytest
import torch
from benchutil import SCALE, peak_memory_bytes, peak_memory_reset, sync

from ddakern.models import create

VARIANTS = {
    "eager": {},
    "fused": {"fused": True},
    "amp": {"amp": True},
    "fused+amp": {"fused": True, "amp": True},
    "channels_last": {"channels_last": True},
    "compile": {"compile": True},
}
MODELS = ["resnet34", "resnet34_dda", "resnet50", "resnet50_dda"]


def cases():
    for model in MODELS:
        for variant, opts in VARIANTS.items():
            if opts.get("fused") and not model.endswith("_dda"):
                continue
            if opts.get("compile") and not SCALE.cuda and model != "resnet34":
                continue  # Inductor on 2 CPU cores takes minutes for the DDA graphs; CUDA runs them all
            yield pytest.param(model, variant, id=f"{model}-{variant}")


def make_step(name: str, opts: dict):
    model = create(name, fused_kernels=bool(opts.get("fused"))).to(SCALE.device).train()
    x = torch.randn(SCALE.batch, 3, SCALE.image_size, SCALE.image_size, device=SCALE.device)
    y = torch.randint(0, 7, (SCALE.batch,), device=SCALE.device)
    if opts.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if opts.get("compile") else model
    optimizer = torch.optim.RAdam(model.parameters(), lr=1e-4, weight_decay=1e-3)
    amp_dtype = torch.bfloat16

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(SCALE.device.type, dtype=amp_dtype, enabled=bool(opts.get("amp"))):
            loss = torch.nn.functional.cross_entropy(forward(x), y)
        loss.backward()
        optimizer.step()
        sync()

    return step


@pytest.mark.parametrize("name,variant", list(cases()))
def test_train_step(benchmark, name, variant):
    step = make_step(name, VARIANTS[variant])
    step()  # warm-up (and compilation)
    peak_memory_reset()
    benchmark.group = f"train-step {name}"
    benchmark.extra_info.update(
        {
            "model": name,
            "variant": variant,
            "baseline": "eager",
            "batch": SCALE.batch,
            "image_size": SCALE.image_size,
            "device": str(SCALE.device),
        }
    )
    benchmark.pedantic(step, rounds=SCALE.rounds, iterations=1)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        benchmark.extra_info["images_per_s"] = SCALE.batch / stats.stats.median
    benchmark.extra_info["peak_memory_bytes"] = peak_memory_bytes()
