"""ddakern.DDA: shapes at any size, the residual, masks, channels_last, gradients, errors."""

import pytest
import torch

from ddakern import DDA
from ddakern.layers.dda import default_width

STAGES = [(1, 64), (2, 128), (3, 256), (4, 512)]


@pytest.mark.parametrize("stage,channels", STAGES)
@pytest.mark.parametrize("size", [(8, 8), (13, 17), (1, 1), (2, 3)])
def test_shape_any_size_batch1_eval(stage, channels, size):
    if stage == 1 and size[0] * size[1] < 4:
        size = (5, 7)
    m = DDA(channels, stage).eval()
    x = torch.randn(1, channels, *size)
    with torch.no_grad():
        y = m(x)
        mask = m.mask(x)
    assert y.shape == x.shape
    torch.testing.assert_close(mask.sum(1), torch.ones(1, *size), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, x * (1 + mask))


@pytest.mark.parametrize("stage,channels", STAGES)
def test_channels_last_matches_contiguous(stage, channels):
    m = DDA(channels, stage).eval()
    x = torch.randn(2, channels, 11, 9)
    with torch.no_grad():
        ref = m(x)
        m_cl = m.to(memory_format=torch.channels_last)
        out = m_cl(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_every_parameter_gets_a_gradient_in_training():
    m = DDA(32, 1, width=48).train()
    x = torch.randn(2, 32, 16, 16, requires_grad=True)
    m(x).square().mean().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_width_defaults_follow_the_reference():
    assert default_width(64, 1) == 512 and default_width(256, 1) == 612
    assert default_width(2048, 4) == 612 and default_width(512, 4) == 512
    m = DDA(256, 1)
    assert m.up2.uplayers[0][0].out_channels == 612
    assert DDA(64, 1, width=100).up2.uplayers[1][0].out_channels == 100


def test_only_used_parameters_are_registered():
    m = DDA(128, 2)
    names = {n.split(".")[1] for n, _ in m.named_parameters() if n.startswith("layers.")}
    assert names == {"conv", "bn", "conv2", "bn2", "layer2", "layer3", "layer4"}


@pytest.mark.parametrize("bad", [torch.randn(2, 63, 8, 8), torch.randn(64, 8, 8)])
def test_wrong_input_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"DDA1 expects an N x 64 x H x W map"):
        DDA(64, 1)(bad)


def test_bad_stage_is_a_clear_error():
    with pytest.raises(ValueError, match="stage must be 1, 2, 3 or 4"):
        DDA(64, 5)
