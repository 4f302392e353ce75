"""One training step of resnet34/50 with and without DDA: fused kernels, AMP, channels_last, compile.

Ratios are against the `eager` variant of the same model in the same run (`group` = model). Each
benchmark also records the bytes the forward saves for backward (not for compile variants), images/s and,
on CUDA, the peak memory of the step. On CPU resnet50_dda (196M parameters) runs eager and fused only.
After the timing each checks the last timed step: finite logits (batch x classes) and scalar loss, a
finite gradient of the right shape for every parameter, and finite parameters after the optimizer step.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from benchutil import (
    SCALE,
    assert_finite,
    median_s,
    peak_memory_bytes,
    peak_memory_reset,
    skip_compile_if_disabled,
    sync,
)

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
NUM_CLASSES = 7  # create()'s default: the seven basic expressions
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


Step = Callable[[], tuple[torch.Tensor, torch.Tensor]]


def make_step(name: str, opts: dict) -> tuple[Step, Callable[[], int], torch.nn.Module]:
    """(one optimizer step returning its detached logits and loss, bytes its forward saves for backward, the
    model) of `name` with the variant's options."""
    model = create(name, fused_ops=bool(opts.get("fused"))).to(SCALE.device).train()
    x = torch.randn(SCALE.batch, 3, SCALE.image_size, SCALE.image_size, device=SCALE.device)
    y = torch.randint(0, NUM_CLASSES, (SCALE.batch,), device=SCALE.device)
    if opts.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if opts.get("compile") else model
    optimizer = torch.optim.RAdam(model.parameters(), lr=1e-4, weight_decay=1e-3)
    amp_dtype = torch.bfloat16

    def logits_and_loss(inp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(SCALE.device.type, dtype=amp_dtype, enabled=bool(opts.get("amp"))):
            logits = forward(inp)
            return logits, torch.nn.functional.cross_entropy(logits, y)

    def step() -> tuple[torch.Tensor, torch.Tensor]:
        optimizer.zero_grad(set_to_none=True)
        logits, loss = logits_and_loss(x)
        loss.backward()
        optimizer.step()
        sync()
        return logits.detach(), loss.detach()

    def saved() -> int:
        return saved_tensor_bytes(logits_and_loss, x)

    return step, saved, model


def check_step_results(model: torch.nn.Module, logits: torch.Tensor, loss: torch.Tensor) -> None:
    """The benchmarked step's logits (batch x classes) and loss (a scalar) are finite, every parameter got a
    finite gradient of its shape, and the optimizer step left every parameter finite."""
    assert_finite("logits", logits, (SCALE.batch, NUM_CLASSES))
    assert_finite("loss", loss, ())
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"no gradient reached {pname}"
        assert_finite(f"d{pname}", p.grad, p.shape)
        assert_finite(pname, p)


@pytest.mark.parametrize("name,variant", list(cases()))
def test_train_step(benchmark, name: str, variant: str) -> None:
    if VARIANTS[variant].get("compile"):
        skip_compile_if_disabled(benchmark)
    smoke = benchmark.disabled and not SCALE.cuda
    if smoke and (name == "resnet50_dda" or "amp" in variant and name.endswith("_dda")):
        # each code path stays in the CI smoke run: the Bottleneck host on resnet50, DDA and its fused
        # ops on resnet34_dda, bf16 autocast on resnet34/resnet50 (fused DDA under bf16 autocast:
        # tests/test_fused_models.py)
        pytest.skip("the CI smoke run (--benchmark-disable on CPU) leaves out resnet50_dda and amp on DDA models")
    step, saved, model = make_step(name, VARIANTS[variant])
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
    logits, loss = benchmark.pedantic(step, rounds=SCALE.rounds, iterations=1)
    med = median_s(benchmark)
    if med is not None:
        benchmark.extra_info["images_per_s"] = SCALE.batch / med
    benchmark.extra_info["peak_memory_bytes"] = peak_memory_bytes()
    check_step_results(model, logits, loss)
