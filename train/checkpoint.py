"""Checkpoints: atomic save (temp file + os.replace), load, RNG capture, `--resume auto`, model rebuild.

A checkpoint is a dict: model, optimizer, scheduler, scaler state dicts; epoch (the epoch in progress,
0-based), step (batches of that epoch already done; 0 at an epoch boundary), global_step, best metric
and its epoch, early-stop counter, metric history, RNG states (one entry per rank), the resolved
config, and what a consumer needs to rebuild the model without the config: model_name, num_classes,
class_names, dda_stages, dda_options, dropout, image_size, normalize, recipe.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ddakern.serialization import torch_load

FORMAT_VERSION = 1


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """torch.save `obj` to `path` through a temporary file in the same folder and os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CheckpointError(ValueError):
    """An unreadable or foreign checkpoint; one line naming the file."""


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by save_atomic."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch_load(path, map_location=map_location)  # weights_only=True + numpy's RNG-state types
    except Exception as e:  # noqa: BLE001 - torch raises many types for corrupt files
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT_VERSION or "model" not in ckpt:
        raise CheckpointError(f"{path}: not a train.run checkpoint (format {FORMAT_VERSION})")
    return ckpt


def rng_state() -> dict[str, Any]:
    """RNG states of python, numpy, torch CPU and (if initialised) CUDA."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def find_auto_resume(out: str | None, recipe: str, model: str, runs: Path = Path("runs")) -> Path | None:
    """`--resume auto`: <out>/last.pt when --out is given, else the newest runs/<recipe>-<model>-*/last.pt."""
    if out is not None:
        p = Path(out) / "last.pt"
        return p if p.is_file() else None
    found = sorted(runs.glob(f"{recipe}-{model}-*/last.pt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def build_model(ckpt: dict[str, Any] | str | os.PathLike, *, fused_kernels: bool = False) -> nn.Module:
    """The trained model of a checkpoint (or checkpoint path), weights loaded, in eval mode, on CPU."""
    from ddakern.models import create

    if not isinstance(ckpt, dict):
        ckpt = load(ckpt)
    kwargs = dict(ckpt.get("dda_options", {})) if ckpt["model_name"].endswith("_dda") else {}
    model = create(
        ckpt["model_name"],
        num_classes=ckpt["num_classes"],
        dda_stages=tuple(ckpt["dda_stages"]),
        dropout=ckpt.get("dropout", 0.4),
        fused_kernels=fused_kernels,
        **kwargs,
    )
    model.load_state_dict(ckpt["model"])
    return model.eval()
