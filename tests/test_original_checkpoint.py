"""Checkpoints in the reference implementation's key layout load and give the reference's outputs."""

from pathlib import Path

import pytest
import torch
from reference_oracle import random_reference_state_dict, reference_forward

from ddakern import load_original_checkpoint
from ddakern.inference.checkpoint import uninitialised
from ddakern.models import WeightsError, create

SPEC = Path(__file__).resolve().parent / "data"  # copies of ../shared/spec/original-keys-*.tsv
CASES = [
    ("resnet34_dda", "original-keys-resnet34-dda.tsv"),
    ("resnet50_dda", "original-keys-resnet50-dda.tsv"),
]


def reference_state(tsv: str) -> dict[str, torch.Tensor]:
    return random_reference_state_dict(str(SPEC / tsv), torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name,tsv", CASES)
def test_reference_checkpoint_loads_and_outputs_match(name, tsv, tmp_path):
    state = reference_state(tsv)
    path = tmp_path / "reference.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    model = load_original_checkpoint(uninitialised(lambda: create(name)), path).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        expected = reference_forward(state, x)
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
        # the oracle really depends on the DDA weights
        state["DDA3.outconv.weight"].mul_(-3.0)
        assert not torch.allclose(reference_forward(state, x), expected, atol=1e-3)


def test_reference_outputs_match_at_224():
    state = reference_state(CASES[0][1])
    model = load_original_checkpoint(uninitialised(lambda: create("resnet34_dda")), state).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_forward(state, x), rtol=1e-5, atol=1e-5)


def test_missing_unexpected_and_misshapen_keys_fail_clearly():
    state = reference_state(CASES[0][1])
    model = uninitialised(lambda: create("resnet34_dda"))  # every load below fails before a weight is copied
    broken = dict(state)
    del broken["DDA2.ffm.conv1.weight"]
    with pytest.raises(WeightsError, match=r"1 missing keys .*dda2\.ffm\.conv1\.weight"):
        load_original_checkpoint(model, broken)
    extra = dict(state, **{"DDA2.extra.weight": torch.zeros(1)})
    with pytest.raises(WeightsError, match=r"1 unexpected .*dda2\.extra\.weight"):
        load_original_checkpoint(model, extra)
    wrong = dict(state, **{"fc.1.weight": torch.zeros(5, 512)})
    with pytest.raises(WeightsError, match=r"fc\.weight has shape \(5, 512\), the model needs \(7, 512\)"):
        load_original_checkpoint(model, wrong)
    with pytest.raises(WeightsError, match="unexpected"):
        load_original_checkpoint(uninitialised(lambda: create("resnet50_dda")), state)
