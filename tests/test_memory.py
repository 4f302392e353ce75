"""ddakern.memory and `python -m ddakern memory`: real forwards, linear in the batch, budgets."""

from __future__ import annotations

import json

import pytest
import torch

from ddakern import memory
from ddakern.cli import main
from ddakern.models import create


def test_estimate_matches_a_measured_batch() -> None:
    model = create("resnet18_dda", dda_stages=(3, 4))
    (est,) = memory.measure(model, 32, modes=["none"])
    measured = memory.step_bytes(model, 32, 5)
    assert est.per_image > 0
    assert abs(est.fixed + 5 * est.per_image - measured) <= 0.01 * measured  # activations grow linearly
    assert est.static == memory.static_bytes(model, 2)
    assert est.max_batch(est.total(7)) == 7


def test_modes_order_and_rng_untouched() -> None:
    model = create("resnet18_dda", dda_stages=(3, 4))
    state = torch.get_rng_state()
    none, dda, all_ = memory.measure(model, 32)
    assert torch.equal(state, torch.get_rng_state())
    assert all_.per_image < dda.per_image < none.per_image
    assert model.recompute == "none"


def test_parse_bytes() -> None:
    assert memory.parse_bytes("24GiB") == 24 * 2**30
    assert memory.parse_bytes("80GB") == 80 * 10**9
    with pytest.raises(ValueError, match="cannot read"):
        memory.parse_bytes("lots")


def test_cli_table_and_json(tmp_path, capsys) -> None:
    out = tmp_path / "mem.json"
    argv = ["memory", "--model", "resnet18_dda", "--image-size", "32", "--budget", "2GiB", "--batch-sizes", "8,64",
            "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "max batch in 2.00 GiB" in text and "dda" in text and "all" in text
    data = json.loads(out.read_text(encoding="utf-8"))
    assert [e["mode"] for e in data["estimates"]] == ["none", "dda", "all"]
    assert main(["memory", "--budget", "lots"]) == 2
    assert "error: cannot read 'lots'" in capsys.readouterr().err


def test_run_header_estimate_of_a_triton_backend_run(monkeypatch, caplog) -> None:
    """`train.run --fused-ops --ops-backend triton` on a GPU: the header's estimate runs a CPU copy of the
    model, which the triton backend refuses outside the interpreter (the run ended at start-up with a
    ValueError traceback). The copy is measured through the torch backend: same saved tensors, so the same
    figure as the torch backend gives; the global backend is left as it was."""
    pytest.importorskip("triton")
    import logging

    from ddakern import dispatch, memory
    from train.config import resolve
    from train.run import build_net, log_memory_estimate

    cfg = resolve({"model": "resnet18_dda", "fused_ops": True, "ops_backend": "triton", "image_size": 32}, {})
    net = build_net(cfg, 7, torch.device("cpu"))
    monkeypatch.setattr(dispatch, "triton_interpreting", lambda: False)  # as on a CUDA machine
    caplog.set_level(logging.INFO, logger="train")
    figures, probed = [], []
    measure = memory.measure
    monkeypatch.setattr(memory, "measure", lambda *a, **k: probed.append(dispatch.current_mode()) or measure(*a, **k))
    runs = [("triton", "cuda"), ("torch", "cuda"), ("auto", "cuda"), ("auto", "cpu")]
    for mode, device in runs:  # the device the run trains on (the probe itself runs on the CPU)
        with dispatch.use_ops_backend(mode):
            log_memory_estimate(cfg, net, torch.device(device))
            assert dispatch.current_mode() == mode
        figures.append([r.getMessage() for r in caplog.records if "memory estimate" in r.getMessage()][-1])
    assert figures[0] == figures[1] and "MiB activations per image" in figures[0]
    # auto on CUDA trains through the Triton kernels: probed through the torch backend like them, not through
    # the unfused reference that auto picks for the CPU probe's small maps (it keeps ~1.5% more for backward)
    assert probed == ["torch", "torch", "torch", "auto"]
