"""ddakern.attach on torchvision ResNets: in place, host keys unchanged, any size, clear errors."""

import copy

import pytest
import torch
import torchvision

import ddakern


@pytest.mark.parametrize(
    "arch,size",
    [("resnet18", (32, 32)), ("resnet34", (45, 61)), ("resnet50", (97, 131)), ("resnet101", (33, 47))],
)
def test_attach_torchvision_any_size(arch, size):
    model = getattr(torchvision.models, arch)(num_classes=7)
    host_state = copy.deepcopy(model.state_dict())
    out = ddakern.attach(model)
    assert out is model
    keys = set(model.state_dict())
    assert set(host_state) <= keys and {k.split(".")[0] for k in keys - set(host_state)} == {
        "dda1",
        "dda2",
        "dda3",
        "dda4",
    }
    missing, unexpected = model.load_state_dict(host_state, strict=False)
    assert unexpected == [] and all(k.startswith("dda") for k in missing)
    model.eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 7)


def test_attach_changes_the_output_through_the_hook():
    model = torchvision.models.resnet18(num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        ddakern.attach(model, stages=(2, 4))
        after = model(x)
    assert not torch.allclose(before, after)
    assert model.dda2.in_channels == 128 and model.dda4.in_channels == 512 and not hasattr(model, "dda1")


def test_hook_applies_the_dda_block_exactly():
    model = ddakern.attach(torchvision.models.resnet18(num_classes=7), stages=(4,)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        h = model.layer3(model.layer2(model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x)))))))
        plain_layer4 = torch.nn.Sequential(*model.layer4)(h)
        expected = model.fc(torch.flatten(model.avgpool(model.dda4(plain_layer4)), 1))
        torch.testing.assert_close(model(x), expected)


def test_deepcopy_keeps_hooks_bound_to_the_copy():
    model = ddakern.attach(torchvision.models.resnet18(num_classes=7), stages=(4,)).eval()
    clone = copy.deepcopy(model)
    with torch.no_grad():
        clone.dda4.head.bn.bias.add_(5.0)
        x = torch.randn(1, 3, 64, 64)
        assert not torch.allclose(clone(x), model(x))


def test_attach_errors_are_clear():
    with pytest.raises(TypeError, match="has no module 'layer1'"):
        ddakern.attach(torchvision.models.squeezenet1_1())  # not a ResNet (and small: builds in ms)
    model = ddakern.attach(torchvision.models.resnet18(), stages=(3,))
    with pytest.raises(ValueError, match="already has a DDA block after layer3"):
        ddakern.attach(model, stages=(3,))
    with pytest.raises(ValueError, match="distinct values in 1..4"):
        ddakern.attach(torchvision.models.resnet18(), stages=(1, 1))


def test_attach_follows_model_device_dtype_and_mode():
    model = torchvision.models.resnet18().double().eval()
    ddakern.attach(model, stages=(4,))
    p = next(model.dda4.parameters())
    assert p.dtype == torch.float64 and not model.dda4.training
