"""TRITON_INTERPRET has one parser (ddakern.dispatch.triton_interpret_requested), with Triton's own meaning,
used by the dispatcher, the Triton launchers and the engine's --ops-backend check."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from ddakern.dispatch import TRUE_VALUES, triton_interpret_requested
from ddakern.ops._common import triton_kernels
from train.cli import check_ops_backend
from train.config import ConfigError, parse_cli, resolve
from train.distributed import DistEnv

CASES = {"1": True, "true": True, "TRUE": True, "On": True, "yes": True, "y": True}
CASES |= {"0": False, "false": False, "off": False, "": False, "2": False, "no": False, " 1": False}


@pytest.mark.parametrize("value", sorted(CASES))
def test_values_parse_as_triton_reads_them(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert triton_interpret_requested({"TRITON_INTERPRET": value}) is CASES[value]
    monkeypatch.setenv("TRITON_INTERPRET", value)
    assert triton_interpret_requested() is CASES[value]
    if importlib.util.find_spec("triton") is not None:
        from triton import knobs

        if hasattr(knobs, "runtime"):  # triton >= 3.4 parses it in knobs (read now, from the environment)
            assert bool(knobs.runtime.interpret) is CASES[value]


def test_unset_is_off() -> None:
    assert triton_interpret_requested({}) is False
    assert set(TRUE_VALUES) == {v.lower() for v, on in CASES.items() if on}


@pytest.mark.parametrize("value", ["true", "false"])
def test_launchers_and_engine_agree(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the one parser, the engine refused TRITON_INTERPRET=true and the launchers took "false" as on."""
    monkeypatch.setenv("TRITON_INTERPRET", value)
    on = CASES[value]
    if importlib.util.find_spec("triton") is not None:
        assert triton_kernels("_common").interpreting() is on
    cfg = resolve(*parse_cli(["--fused-ops", "--ops-backend", "triton"]))
    cpu = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    if on:
        check_ops_backend(cfg, cpu)
    else:
        with pytest.raises(ConfigError, match="TRITON_INTERPRET"):
            check_ops_backend(cfg, cpu)
