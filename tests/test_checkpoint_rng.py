"""Resuming with fewer visible GPUs restores the CUDA RNG states of the devices that exist (CPU test)."""

from __future__ import annotations

import logging

import pytest
import torch

from train import checkpoint


def test_set_rng_state_with_fewer_visible_gpus(monkeypatch, caplog) -> None:
    """Saved on 2 GPUs, resumed with 1 visible: device 0's state restored, device 1's dropped, a warning."""
    calls: list[tuple[int, torch.Tensor]] = []

    def set_rng_state(state: torch.Tensor, device: int | str | torch.device = "cuda") -> None:
        index = torch.device(device).index if not isinstance(device, int) else device
        index = 0 if index is None else index
        if index >= 1:  # as CUDA does for a device that is not visible
            raise RuntimeError("CUDA error: invalid device ordinal")
        calls.append((index, state))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", set_rng_state)  # what set_rng_state_all calls
    saved = [torch.randint(0, 255, (16,), dtype=torch.uint8) for _ in range(2)]
    state = {**checkpoint.rng_state(), "cuda": saved}
    with caplog.at_level(logging.WARNING, logger="train"):
        checkpoint.set_rng_state(state)
    assert len(calls) == 1 and calls[0][0] == 0 and torch.equal(calls[0][1], saved[0])
    assert "CUDA RNG states of 2 devices, 1 visible now: restored 1" in caplog.text


@pytest.mark.parametrize("visible", [0, 2])
def test_set_rng_state_counts(monkeypatch, caplog, visible: int) -> None:
    """As many visible as saved: all restored, no warning; CUDA gone: none restored, a warning."""
    restored: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: visible > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device="cuda": restored.append(device))
    state = {**checkpoint.rng_state(), "cuda": [torch.randint(0, 255, (16,), dtype=torch.uint8) for _ in range(2)]}
    with caplog.at_level(logging.WARNING, logger="train"):
        checkpoint.set_rng_state(state)
    assert restored == list(range(visible))
    assert ("restored 0" in caplog.text) == (visible == 0) and ("RNG" in caplog.text) == (visible == 0)


def test_cuda_rng_state_follows_the_runs_device(monkeypatch, caplog) -> None:
    """The state saved is the run's device's generator (cuda:1 for a run on cuda:1, not every device by
    number), and it is restored onto the device of the resumed run, whatever its number; a resume off CUDA
    says it cannot restore it."""
    generators = {0: torch.full((16,), 0, dtype=torch.uint8), 1: torch.full((16,), 1, dtype=torch.uint8)}
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": generators[torch.device(device).index])
    monkeypatch.setattr(
        torch.cuda, "set_rng_state", lambda s, device="cuda": generators.__setitem__(torch.device(device).index, s)
    )
    state = checkpoint.rng_state(torch.device("cuda", 1))
    assert torch.equal(state["cuda_device"], generators[1]) and "cuda" not in state
    assert "cuda_device" not in checkpoint.rng_state(torch.device("cpu"))
    generators[1] = torch.full((16,), 9, dtype=torch.uint8)  # both generators move on
    generators[0] = torch.full((16,), 7, dtype=torch.uint8)
    checkpoint.set_rng_state(state, torch.device("cuda", 0))  # resumed on another GPU
    assert generators[0].tolist() == [1] * 16 and generators[1].tolist() == [9] * 16
    with caplog.at_level(logging.WARNING, logger="train"):
        checkpoint.set_rng_state(state, torch.device("cpu"))
    assert "CUDA RNG state; this run is on cpu: not restored" in caplog.text
