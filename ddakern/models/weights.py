"""Pretrained weights: torchvision ImageNet files through torch.hub's cache, VGGFace2 ResNet-50."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ddakern.serialization import UnsafeFileError, load_numpy_pickle, quiet_protocol_warning

IMAGENET_FILES = {
    "resnet18": "resnet18-5c106cde.pth",
    "resnet34": "resnet34-333f7ec4.pth",
    "resnet50": "resnet50-19c8e357.pth",
    "resnet101": "resnet101-5d3b4d8f.pth",
    "vgg11_bn": "vgg11_bn-6002323d.pth",
    "vgg13_bn": "vgg13_bn-abd245e5.pth",
}
IMAGENET_URL = "https://download.pytorch.org/models/{file}"
VGGFACE2_FILES = ("resnet50_ft_weight.pkl", "resnet50_scratch_weight.pkl", "resnet50_vggface2.pth")
CLASSIFIER_PREFIXES = ("fc.", "classifier.6.")


class WeightsError(RuntimeError):
    """Pretrained weights could not be found, fetched or read."""


def hub_checkpoint_dir() -> Path:
    """torch.hub's checkpoint cache ($TORCH_HOME/hub/checkpoints by default)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a torch state dict (.pth/.pt) or a pickle of numpy arrays (.pkl) as tensors."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".pkl":
            raw = load_numpy_pickle(path)  # numpy arrays only; anything else is refused
            state = {k: torch.from_numpy(np.asarray(v)) for k, v in dict(raw).items()}
        else:
            with quiet_protocol_warning():
                state = torch.load(path, map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except UnsafeFileError as e:
        raise WeightsError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line error
        # torch's own text spans lines and gives weights_only advice that does not apply: keep one line
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        if "weights_only" in reason or "Weights only" in reason:
            reason = "not a PyTorch state dict of tensors"
        raise WeightsError(f"{path} is not a readable checkpoint: {reason}") from None
    for wrapper in ("state_dict", "model", "net"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def imagenet_state_dict(arch: str, *, progress: bool = True) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for `arch`: the cached file, else a download into the cache."""
    if arch not in IMAGENET_FILES:
        raise WeightsError(f"no ImageNet weights known for {arch!r}; known: {', '.join(IMAGENET_FILES)}")
    file = IMAGENET_FILES[arch]
    path = hub_checkpoint_dir() / file
    if not path.is_file():
        url = IMAGENET_URL.format(file=file)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
        os.close(fd)
        try:
            torch.hub.download_url_to_file(url, tmp, progress=progress)
            os.replace(tmp, path)
        except Exception as e:  # noqa: BLE001 - offline, DNS, HTTP errors: one actionable line
            Path(tmp).unlink(missing_ok=True)
            raise WeightsError(
                f"ImageNet weights {file} are not cached and could not be downloaded ({type(e).__name__}); "
                f"download {url} and put it at {path}"
            ) from None
    return read_state_dict(path)


def vggface2_state_dict(path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """A VGGFace2 ResNet-50 (state dict or numpy pickle), from `path` or torch.hub's cache."""
    if path is None:
        found = [hub_checkpoint_dir() / f for f in VGGFACE2_FILES if (hub_checkpoint_dir() / f).is_file()]
        if not found:
            raise WeightsError(
                f"VGGFace2 ResNet-50 weights not found: put {VGGFACE2_FILES[0]} (numpy pickle) or "
                f"{VGGFACE2_FILES[2]} (state dict) in {hub_checkpoint_dir()}, or pass pretrained=<path>"
            )
        path = found[0]
    return read_state_dict(path)


def load_host_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load a host's pretrained weights, dropping its classifier; every host key must be present."""
    own = model.state_dict()
    host = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    host_keys = {k for k in own if not k.startswith(CLASSIFIER_PREFIXES) and not k.startswith("dda")}
    missing = sorted(host_keys - host.keys())
    unexpected = sorted(host.keys() - host_keys)
    if missing or unexpected:
        raise WeightsError(
            f"{source} does not fit {type(model).__name__}: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    bad = [k for k in host if tuple(host[k].shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        raise WeightsError(f"{source}: {k} has shape {tuple(host[k].shape)}, the model needs {tuple(own[k].shape)}")
    model.load_state_dict(host, strict=False)


def load_context_weights(model: nn.Module, resnet18: Mapping[str, torch.Tensor]) -> int:
    """Copy ImageNet ResNet-18 stages into every DDA context path; returns blocks loaded."""
    n = 0
    for k in range(1, 5):
        dda = getattr(model, f"dda{k}", None)
        if dda is None:
            continue
        ctx = dda.layers
        sub = {key: v for key, v in resnet18.items() if key.split(".")[0] in ctx.stage_names}
        missing, _ = ctx.load_state_dict(sub, strict=False)
        missing = [m for m in missing if m.split(".")[0] in ctx.stage_names]
        if missing:
            raise WeightsError(f"ResNet-18 weights lack {missing[0]} needed by dda{k}.layers")
        n += 1
    return n
