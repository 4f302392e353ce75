"""The model registry: names, parameter counts, shapes at any size, gradients, torchvision keys."""

import pytest
import torch
import torchvision

from ddakern.inference.checkpoint import uninitialised
from ddakern.models import create, list_models


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,expected", [("resnet34_dda", 97_595_975), ("resnet50_dda", 196_422_751)])
def test_parameter_counts_are_exactly_the_references_used_ones(name, expected):
    assert n_params(create(name)) == expected


def test_registry_lists_required_models_and_rejects_unknown():
    required = {
        "resnet18",
        "resnet34",
        "resnet50",
        "vgg11_bn",
        "vgg13_bn",
        "resnet18_dda",
        "resnet34_dda",
        "resnet50_dda",
    }
    assert required <= set(list_models())
    with pytest.raises(ValueError, match=r"unknown model 'resnet35'; known models: .*resnet34_dda"):
        create("resnet35")


@pytest.fixture(scope="module")
def resnet34_dda_eval() -> torch.nn.Module:
    """Built once for the sizes below (97.6M parameters, about 1.3 CPU-s each); eval mode and no_grad: the
    tests only read it."""
    return create("resnet34_dda").eval()


@pytest.mark.parametrize("size", [(224, 224), (64, 64), (97, 131)])
def test_resnet34_dda_shapes_batch1_eval(size, resnet34_dda_eval):
    with torch.no_grad():
        assert resnet34_dda_eval(torch.randn(1, 3, *size)).shape == (1, 7)


def test_resnet50_dda_odd_size_and_features():
    model = create("resnet50_dda", num_classes=5).eval()
    x = torch.randn(2, 3, 97, 131)
    with torch.no_grad():
        assert model(x).shape == (2, 5)
        assert model.forward_features(x).shape == (2, model.num_features) == (2, 2048)


def test_every_parameter_gets_a_gradient():
    model = create("resnet34_dda").train()
    torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 64, 64)), torch.tensor([1, 4])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_dda_stage_subsets_for_the_ablation():
    full = create("resnet18_dda")
    only34 = create("resnet18_dda", dda_stages=(3, 4))
    assert only34.dda1 is None and only34.dda2 is None and only34.dda3 is not None
    assert n_params(create("resnet18")) < n_params(only34) < n_params(full)
    with pytest.raises(ValueError, match="distinct values in 1..4"):
        create("resnet18_dda", dda_stages=(0, 2))


def test_channels_last_model_matches_contiguous():
    model = create("resnet18_dda").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "vgg11_bn", "vgg13_bn"])
def test_torchvision_checkpoint_round_trip(name, tmp_path):
    tv = getattr(torchvision.models, name)(num_classes=7).eval()
    path = tmp_path / f"{name}.pth"
    torch.save(tv.state_dict(), path)
    # no random initialisation for weights about to be replaced (VGG: 130 M parameters)
    ours = uninitialised(lambda: create(name, dropout=0.5)).eval()
    back = uninitialised(lambda: getattr(torchvision.models, name)(num_classes=7))
    ours.load_state_dict(torch.load(path, weights_only=True), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), rtol=1e-4, atol=1e-5)
    back.load_state_dict(ours.state_dict(), strict=True)
    assert not any(t.is_meta for t in [*ours.parameters(), *ours.buffers(), *back.parameters(), *back.buffers()])


def test_vgg_features_and_any_size():
    model = create("vgg11_bn").eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 33, 41)).shape == (1, 4096)
        assert model(torch.randn(1, 3, 48, 48)).shape == (1, 7)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expected an N x 3 x H x W image batch, got shape \(2, 1, 32, 32\)"):
        create("resnet18")(torch.randn(2, 1, 32, 32))
