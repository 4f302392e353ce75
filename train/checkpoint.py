"""Training checkpoints: the engine's state in them, RNG capture, `--resume auto`.

The schema is the library's (ddakern.inference.checkpoint: format version, the keys that rebuild the
model, safe loading, the format check); this module writes the model's entries through it (`model_entries`)
and reads with its `read_checkpoint` (`load`). Besides the schema's entries a training checkpoint holds
the optimizer, scheduler and scaler state dicts; epoch (the epoch in progress, 0-based), step (batches of
that epoch already done; 0 at an epoch boundary), global_step, best metric and its epoch, early-stop
counter, metric history, RNG states (one entry per rank), the resolved config, recipe and dataset.
Saved by ddakern.atomic.torch_save; the model is rebuilt by ddakern.inference.checkpoint.model_of.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ddakern.inference.checkpoint import CheckpointError, model_entries, read_checkpoint

load = read_checkpoint
"""Read a checkpoint (the library's safe loader and format check)."""
log = logging.getLogger("train")


@dataclass
class State:
    """Progress that goes into checkpoints besides the module/optimiser states."""

    epoch: int = 0  # epoch in progress (0-based)
    step: int = 0  # batches of `epoch` already done
    global_step: int = 0
    best_metric: float = -1.0  # best validation accuracy (%) so far
    best_epoch: int = 0  # 1-based; 0: none yet
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    partial: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # loss sum, correct, count
    train_seconds: float = 0.0
    train_images: int = 0
    best_weights: str = "raw"  # which weights best.pt selected: "raw" or "ema" (--ema)


_STATE_KEYS = (
    "epoch",
    "step",
    "global_step",
    "best_metric",
    "best_epoch",
    "bad_epochs",
    "train_seconds",
    "train_images",
)

_MODEL_CONFIG = ("image_size", "normalize", "dda_stages", "dda_options", "dropout")
"""The config fields that go into the schema's model entries under their own names."""


def build_checkpoint(
    *,
    state: State,
    net: nn.Module,
    optimizer: Any,
    scheduler: Any,
    scaler: Any,
    rng: list[dict[str, Any]],
    world_size: int,
    config: Any,
    class_names: tuple[str, ...],
    extra: dict[str, Any] | None = None,
    ema: Any = None,
    weights: str = "raw",
) -> dict[str, Any]:
    """The checkpoint dict: everything needed to continue, and to rebuild the model without the config.

    With an EMA (`ema`, train.methods.ema.WeightEMA) its weights are under "ema"; `weights` "ema" (a best.pt
    that selected them) puts them under "model" too, which is what inference loads, and the raw ones under
    "raw_model", which is what a resume loads."""
    cfg = config
    model = net.state_dict()
    ckpt = {
        **model_entries(model_name=cfg.model, class_names=class_names, **{k: getattr(cfg, k) for k in _MODEL_CONFIG}),
        "model": model,
        "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        **{k: getattr(state, k) for k in _STATE_KEYS[:6]},
        "history": list(state.history),
        "partial": list(state.partial),
        **{k: getattr(state, k) for k in _STATE_KEYS[6:]},
        "rng": rng,
        "world_size": world_size,
        "config": cfg.to_dict(),
        "recipe": cfg.recipe,
        "dataset": cfg.dataset,
        "best_weights": state.best_weights,
    }
    if ema is not None:
        ckpt["ema"] = ema.state_dict()
        ckpt["selected_weights"] = weights
        if weights == "ema":
            ckpt["raw_model"], ckpt["model"] = model, ckpt["ema"]
    ckpt.update(extra or {})
    return ckpt


def restore_checkpoint(
    ckpt: dict[str, Any],
    *,
    state: State,
    net: nn.Module,
    optimizer: Any,
    scheduler: Any,
    scaler: Any,
    rank: int,
    world_size: int,
    model_name: str,
    num_classes: int,
    ema: Any = None,
) -> dict[str, Any] | None:
    """Load `ckpt` into the components and `state`; returns this rank's saved RNG state (None when the
    checkpoint was written by another number of processes: then the run is not bitwise-resumable)."""
    if ckpt["model_name"] != model_name or ckpt["num_classes"] != num_classes:
        raise CheckpointError(
            f"checkpoint is {ckpt['model_name']} with {ckpt['num_classes']} classes, "
            f"run is {model_name} with {num_classes}"
        )
    net.load_state_dict(ckpt.get("raw_model", ckpt["model"]))
    if ema is not None and "ema" in ckpt:
        ema.load_state_dict(ckpt["ema"])
    elif ema is not None:
        log.warning("checkpoint has no EMA weights (trained without --ema): the average starts from its weights")
        ema.reset(net)
    optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt["scheduler"] is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt["scaler"]:  # empty when saved without fp16 (GradScaler refuses an empty state): a fresh scale
        scaler.load_state_dict(ckpt["scaler"])
    for k in _STATE_KEYS:
        setattr(state, k, ckpt[k])
    state.best_weights = ckpt.get("best_weights", "raw")
    state.history = list(ckpt["history"])
    # the partial-epoch sums were reduced over ranks when saved: rank 0 carries them
    state.partial = list(ckpt["partial"]) if rank == 0 else [0.0, 0.0, 0.0]
    if ckpt["world_size"] == world_size:
        return ckpt["rng"][rank]
    log.warning(
        f"checkpoint was written by {ckpt['world_size']} processes, this run has "
        f"{world_size}: RNG streams are not restored (the run is not bitwise-resumable)"
    )
    return None


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """RNG states of python, numpy, torch CPU and, for a run on a CUDA device, that device's generator (the one
    its dropout and augmentation draw from: cuda:1 in a run on cuda:1, whichever device is current)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore what rng_state captured. The saved CUDA generator state goes to this run's device, whatever
    its number (a run saved on cuda:1 may resume on cuda:0 or under CUDA_VISIBLE_DEVICES=1); a run resumed
    off CUDA cannot restore it (a warning). Checkpoints written before kept every device's state by
    number ("cuda"): restored by number, for the devices visible now (the rest dropped, with a warning)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda_device" in state:
        if device is not None and device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_device"].cpu(), device)
        else:
            log.warning(f"checkpoint holds a CUDA RNG state; this run is on {device or 'cpu'}: not restored "
                        "(the run is not bitwise-resumable)")  # fmt: skip
        return
    saved = state.get("cuda") or []
    visible = torch.cuda.device_count() if saved and torch.cuda.is_available() else 0
    for i, s in enumerate(saved[:visible]):
        torch.cuda.set_rng_state(s.cpu(), device=i)
    if len(saved) > visible:
        log.warning(
            f"checkpoint holds the CUDA RNG states of {len(saved)} devices, {visible} visible now: restored "
            f"{visible} (the run is not bitwise-resumable)"
        )


AUTO_RESUME_RUNS = Path("runs")
"""Where `--resume auto` without --out looks: the default run folders, relative to the working directory."""


def auto_resume_place(out: str | None, recipe: str, model: str, runs: Path = AUTO_RESUME_RUNS) -> Path:
    """Where `--resume auto` looks, as an absolute path: --out, else runs/<recipe>-<model>-* (a pattern)."""
    return Path(out).absolute() if out is not None else (runs / f"{recipe}-{model}-*").absolute()


def find_auto_resume(out: str | None, recipe: str, model: str, runs: Path = AUTO_RESUME_RUNS) -> Path | None:
    """`--resume auto`: <out>/last.pt when --out is given, else the newest runs/<recipe>-<model>-*/last.pt."""
    if out is not None:
        p = Path(out) / "last.pt"
        return p if p.is_file() else None
    found = sorted(runs.glob(f"{recipe}-{model}-*/last.pt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None
