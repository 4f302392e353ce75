"""Load checkpoints saved by the reference DDA implementation (key layout in the spec's TSVs)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch
from torch import nn

from ddakern.models.weights import WeightsError, read_state_dict

_UNUSED_CONTEXT = re.compile(r"^DDA(\d)\.layers\.(conv1|bn1|fc|layer(\d))\.")
_RENAMES = (
    (re.compile(r"^DDA(\d)\.outconv\."), r"dda\1.head.conv."),
    (re.compile(r"^DDA(\d)\.bn\."), r"dda\1.head.bn."),
    (re.compile(r"^DDA(\d)\."), r"dda\1."),
    (re.compile(r"^fc\.1\."), "fc."),
)


def is_unused_reference_key(key: str) -> bool:
    """Keys the reference registers but never uses: per-block ResNet-18 stem, fc, skipped stages."""
    m = _UNUSED_CONTEXT.match(key)
    if m is None:
        return False
    return m.group(3) is None or int(m.group(3)) < int(m.group(1))


def convert_original_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reference key layout -> ddakern's: drop never-used keys, rename the rest."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if is_unused_reference_key(key):
            continue
        for pattern, repl in _RENAMES:
            key, n = pattern.subn(repl, key)
            if n:
                break
        out[key] = value
    return out


def load_original_checkpoint(
    model: nn.Module, state_dict_or_path: Mapping[str, torch.Tensor] | str | os.PathLike
) -> nn.Module:
    """Load a reference-implementation checkpoint into a `resnet34_dda` / `resnet50_dda` model.

    Never-used keys are dropped; any other missing or unexpected key, or a shape mismatch,
    raises WeightsError naming it. Returns the model.
    """
    if isinstance(state_dict_or_path, Mapping):
        state = {k: v for k, v in state_dict_or_path.items() if isinstance(v, torch.Tensor)}
        source = "checkpoint"
    else:
        state = read_state_dict(state_dict_or_path)
        source = str(state_dict_or_path)
    converted = convert_original_state_dict(state)
    own = model.state_dict()
    missing = sorted(own.keys() - converted.keys())
    unexpected = sorted(converted.keys() - own.keys())
    if missing or unexpected:
        raise WeightsError(
            f"{source} does not match {type(model).__name__} in the reference layout: "
            f"{len(missing)} missing keys (first: {missing[:3]}), "
            f"{len(unexpected)} unexpected (first: {unexpected[:3]})"
        )
    for k, v in converted.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise WeightsError(f"{source}: {k} has shape {tuple(v.shape)}, the model needs {tuple(own[k].shape)}")
    model.load_state_dict(converted, strict=True)
    return model
