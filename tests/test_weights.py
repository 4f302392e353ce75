"""Pretrained weights: torch.hub cache, offline errors, VGGFace2 pickles, context paths."""

import pickle

import pytest
import torch

from ddakern.models import WeightsError, create
from ddakern.models import weights as W


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch.hub cache and a download URL that cannot be reached."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    monkeypatch.setattr(W, "IMAGENET_URL", "http://127.0.0.1:9/models/{file}")
    d = W.hub_checkpoint_dir()
    d.mkdir(parents=True)
    return d


def save_as_imagenet(arch: str, hub_dir, num_classes: int = 1000) -> dict[str, torch.Tensor]:
    state = create(arch.replace("_dda", ""), num_classes=num_classes).state_dict()
    torch.save(state, hub_dir / W.IMAGENET_FILES[arch])
    return state


def test_missing_weights_offline_fail_with_file_and_place(hub):
    with pytest.raises(WeightsError) as err:
        create("resnet34", pretrained="imagenet")
    msg = str(err.value)
    assert "\n" not in msg and "resnet34-333f7ec4.pth" in msg and str(hub / "resnet34-333f7ec4.pth") in msg
    assert not any(hub.iterdir()), "a failed download must leave no partial file"


def test_cached_imagenet_weights_load_into_host_and_context_paths(hub):
    r34 = save_as_imagenet("resnet34", hub)
    r18 = save_as_imagenet("resnet18", hub)
    model = create("resnet34_dda", pretrained="imagenet", dda_stages=(2, 4))
    state = model.state_dict()
    torch.testing.assert_close(state["layer3.1.conv2.weight"], r34["layer3.1.conv2.weight"])
    torch.testing.assert_close(state["dda2.layers.layer3.0.conv1.weight"], r18["layer3.0.conv1.weight"])
    torch.testing.assert_close(state["dda4.layers.layer4.1.bn2.running_var"], r18["layer4.1.bn2.running_var"])
    assert state["fc.weight"].shape == (7, 512)


def test_missing_host_file_is_named_even_with_resnet18_cached(hub):
    save_as_imagenet("resnet18", hub)  # host file missing -> names the host file
    with pytest.raises(WeightsError, match="resnet34-333f7ec4.pth"):
        create("resnet34_dda", pretrained="imagenet")


def test_corrupt_cached_file_is_a_clear_error(hub):
    (hub / "resnet18-5c106cde.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"resnet18-5c106cde\.pth is not a readable checkpoint"):
        create("resnet18", pretrained="imagenet")


def test_vggface2_numpy_pickle_drops_8631_classifier(hub, tmp_path):
    save_as_imagenet("resnet18", hub)
    face = create("resnet50", num_classes=8631).state_dict()
    path = tmp_path / "resnet50_ft_weight.pkl"
    with open(path, "wb") as f:
        pickle.dump({k: v.numpy() for k, v in face.items()}, f)
    model = create("resnet50_dda", pretrained=path, dda_stages=(4,))
    torch.testing.assert_close(model.state_dict()["layer2.0.conv2.weight"], face["layer2.0.conv2.weight"])
    assert model.fc.out_features == 7
    torch.save(face, hub / "resnet50_vggface2.pth")
    plain = create("resnet50", pretrained="vggface2")
    torch.testing.assert_close(plain.state_dict()["bn1.running_mean"], face["bn1.running_mean"])


def test_vggface2_missing_and_wrong_host(hub):
    with pytest.raises(WeightsError, match="resnet50_ft_weight.pkl"):
        create("resnet50", pretrained="vggface2")
    with pytest.raises(WeightsError, match="resnet50 only"):
        create("resnet34", pretrained="vggface2")


def test_weights_of_another_architecture_fail_clearly(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(create("resnet18").state_dict(), path)
    with pytest.raises(WeightsError, match=r"does not fit ResNet: .* missing keys"):
        create("resnet34", pretrained=path)
    with pytest.raises(WeightsError, match="does not exist"):
        create("resnet34", pretrained=tmp_path / "nope.pth")
