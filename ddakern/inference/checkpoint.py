"""The checkpoint schema (format 1), its safe reading and the model a checkpoint rebuilds.

The library owns the schema and does not import `train`; the engine (`train.checkpoint`) writes the
model's entries with `model_entries` and reads with `read_checkpoint`, as inference does. A checkpoint
is a dict: `format`, `model` (state dict) and the `MODEL_KEYS` (`model_name`, `num_classes`,
`class_names`, `dda_stages`, `dda_options`, `dropout`, `image_size`, `normalize`); fusion checkpoints
have `model_name` "fusion-<method>" and `fusion` {method, members (paths of the member checkpoints),
options}. The engine adds its training state (optimizer, epoch, RNG, config, ...) beside them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ddakern.normalization import norm_constants
from ddakern.serialization import UnsafeFileError, torch_load

FORMAT_VERSION = 1
MODEL_KEYS = ("model_name", "num_classes", "class_names", "dda_stages", "dda_options", "dropout", "image_size",
              "normalize")  # fmt: skip
"""The entries that rebuild the model and its input preprocessing without the training config."""
REQUIRED_KEYS = ("model_name", "class_names", "image_size", "normalize")
"""Those a checkpoint cannot be used without (the others have defaults: see `spec_of`)."""


class CheckpointError(ValueError):
    """An unreadable, unsafe or foreign checkpoint; the message is one line naming the file."""


@dataclass(frozen=True)
class ModelSpec:
    """What inference needs besides the weights: architecture, classes and input preprocessing."""

    model_name: str
    class_names: tuple[str, ...]
    image_size: int
    normalize: str
    dda_stages: tuple[int, ...] = ()
    dda_options: dict[str, Any] = field(default_factory=dict)
    dropout: float = 0.4
    fusion: dict[str, Any] | None = None
    members: tuple[ModelSpec, ...] = ()

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) on the 0..255 scale, as the training pipelines use them (ddakern.normalization)."""
        try:
            return norm_constants(self.normalize)
        except ValueError as e:
            raise CheckpointError(str(e)) from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (stored in exported files)."""
        return {
            "model_name": self.model_name,
            "class_names": list(self.class_names),
            "image_size": self.image_size,
            "normalize": self.normalize,
        }


def model_entries(
    *,
    model_name: str,
    class_names: Sequence[str],
    image_size: int,
    normalize: str,
    dda_stages: Sequence[int] = (),
    dda_options: dict[str, Any] | None = None,
    dropout: float = 0.4,
) -> dict[str, Any]:
    """`format` and the MODEL_KEYS of a checkpoint, as the engine writes them (weights go under `model`)."""
    return {
        "format": FORMAT_VERSION,
        "model_name": model_name,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "dda_stages": list(dda_stages),
        "dda_options": dict(dda_options or {}),
        "dropout": dropout,
        "image_size": image_size,
        "normalize": normalize,
    }


def check_format(ckpt: Any, path: str | os.PathLike = "<checkpoint>") -> dict[str, Any]:
    """`ckpt` if it is a checkpoint of this format with weights and the required keys; else a one-line
    CheckpointError naming `path`."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT_VERSION or "model" not in ckpt:
        raise CheckpointError(f"{path}: not a train.run / train.fuse checkpoint (format {FORMAT_VERSION})")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return ckpt


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict, loaded without running code from the file (weights_only=True with numpy's
    RNG-state types allowed: ddakern.serialization) and checked by `check_format`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch_load(path, map_location=map_location)
    except UnsafeFileError as e:
        raise CheckpointError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for corrupt files
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from None
    return check_format(ckpt, path)


def member_path(stored: str, fusion_ckpt: Path) -> Path:
    """A member checkpoint as train.fuse recorded it: absolute, relative to the working folder, or
    relative to a folder above the fusion checkpoint (runs moved together)."""
    p = Path(stored)
    if p.is_absolute() or p.is_file():
        return p
    for base in fusion_ckpt.resolve().parents:
        if (base / p).is_file():
            return base / p
    return p


def spec_of(ckpt: dict[str, Any], path: str | os.PathLike = "<checkpoint>") -> ModelSpec:
    """The ModelSpec of a checkpoint dict; fusion members are read from the files it names."""
    common = dict(
        class_names=tuple(ckpt["class_names"]), image_size=int(ckpt["image_size"]), normalize=ckpt["normalize"]
    )
    name = ckpt["model_name"]
    if not name.startswith("fusion-"):
        return ModelSpec(
            model_name=name,
            dda_stages=tuple(ckpt.get("dda_stages", ())),
            dda_options=dict(ckpt.get("dda_options") or {}),
            dropout=float(ckpt.get("dropout", 0.4)),
            **common,
        )
    fusion = ckpt.get("fusion") or {}
    members = []
    for stored in fusion.get("members", []):
        member = member_path(stored, Path(path))
        if not member.is_file():
            raise CheckpointError(f"{path}: fusion member checkpoint {stored} not found (it defines the architecture)")
        members.append(spec_of(read_checkpoint(member), member))
    if len(members) != 2:
        raise CheckpointError(f"{path}: a fusion checkpoint needs two member checkpoints, it names {len(members)}")
    return ModelSpec(model_name=name, fusion=dict(fusion), members=tuple(members), **common)


def build_from_spec(spec: ModelSpec, *, fused_ops: bool = False) -> nn.Module:
    """The untrained model a spec describes (fusion modules with their members)."""
    from ddakern.ensemble import create_ensemble
    from ddakern.models import create

    if spec.fusion is not None:
        members = [build_from_spec(m, fused_ops=fused_ops) for m in spec.members]
        return create_ensemble(spec.fusion["method"], *members, len(spec.class_names), **spec.fusion.get("options", {}))
    kwargs = spec.dda_options if spec.model_name.endswith("_dda") else {}
    return create(
        spec.model_name,
        num_classes=len(spec.class_names),
        dda_stages=spec.dda_stages or (1, 2, 3, 4),
        dropout=spec.dropout,
        fused_ops=fused_ops,
        **kwargs,
    )


def uninitialised(build: Callable[[], nn.Module]) -> nn.Module:
    """The model `build()` makes, with its memory allocated but not initialised, for weights about to be
    loaded (strictly): built on the meta device, then given empty CPU storage. The random initialisation it
    skips is most of a build (about 0.75 s for resnet18_dda's 87 M parameters, 1.3 s for VGG's 130 M). A
    model with a tensor that load_state_dict does not fill (a non-persistent buffer) is built normally."""
    with torch.device("meta"):
        model = build()
    filled = model.state_dict().keys()
    tensors = [name for name, _ in model.named_parameters()] + [name for name, _ in model.named_buffers()]
    if not set(tensors) <= set(filled):
        return build()
    return model.to_empty(device="cpu")


def model_of(
    ckpt: dict[str, Any], path: str | os.PathLike = "<checkpoint>", *, fused_ops: bool = False
) -> tuple[nn.Module, ModelSpec]:
    """The trained model of a checkpoint dict already read (eval mode, on CPU) and its spec; `path`
    names the file in messages and locates fusion members."""
    spec = spec_of(ckpt, path)
    model = uninitialised(lambda: build_from_spec(spec, fused_ops=fused_ops))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(
            f"{path}: weights do not fit {spec.model_name}: {first[1] if len(first) > 1 else e}"
        ) from None
    return model.eval(), spec


def load_model(
    path: str | os.PathLike, *, fused_ops: bool = False, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelSpec]:
    """The trained model of a checkpoint file (eval mode, on `device`) and its spec.

    `fused_ops=False` builds the plain-PyTorch graph (same weights): what export lowers to standard ops.
    """
    model, spec = model_of(read_checkpoint(path), path, fused_ops=fused_ops)
    return model.to(device), spec


__all__ = [
    "FORMAT_VERSION",
    "MODEL_KEYS",
    "CheckpointError",
    "ModelSpec",
    "build_from_spec",
    "check_format",
    "load_model",
    "member_path",
    "model_entries",
    "model_of",
    "norm_constants",
    "read_checkpoint",
    "spec_of",
    "uninitialised",
]
