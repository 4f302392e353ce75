"""Which data a recipe reads (real data sets or the cached synthetic set) and its loaders."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from train.config import Config
from train.data import SampleSet, build_loader, build_tta_loader, dali_available, load_splits, make_synthetic
from train.distributed import DistEnv, barrier

log = logging.getLogger("train")

SYNTHETIC_SEED = 113
"""The built-in synthetic set is one fixed data set, whatever the training seed."""


def synthetic_root(cfg: Config) -> Path:
    """--data-root, else $DDAKERN_DATA/synthetic, else ~/.cache/ddakern/synthetic."""
    if cfg.data_root is not None:
        return Path(cfg.data_root)
    if os.environ.get("DDAKERN_DATA"):
        return Path(os.environ["DDAKERN_DATA"]) / "synthetic"
    return Path.home() / ".cache" / "ddakern" / "synthetic"


def load_data(cfg: Config, env: DistEnv) -> dict[str, SampleSet]:
    """The run's {"train", "val", "test"} splits; the synthetic set is generated once (rank 0 first)."""
    root = Path(cfg.data_root) if cfg.data_root is not None else None
    if cfg.recipe == "synthetic":
        root = synthetic_root(cfg)
        counts = dict(n_train=cfg.synthetic_train, n_val=cfg.synthetic_val, n_test=cfg.synthetic_test)
        if env.is_main:
            make_synthetic(root, seed=SYNTHETIC_SEED, **counts)
        barrier(env)
        if not env.is_main:
            make_synthetic(root, seed=SYNTHETIC_SEED, **counts)  # already there: only checks the manifest
    assert root is not None
    return load_splits(cfg.dataset, root, skip_bad=cfg.skip_bad, holdout=cfg.holdout, seed=cfg.seed)


def choose_loader(requested: str) -> str:
    """The input pipeline that will run: "dali" or "torch" ("auto" and "dali" become "torch" without DALI).

    Decided once per run (train.cli); the loaders, the resume logic and the summary all read this answer.
    """
    if requested == "torch":
        return "torch"
    if dali_available():
        return "dali"
    if requested == "dali":
        log.warning("--loader dali: nvidia-dali is not installed; using the PyTorch loader")
    return "torch"


def make_loaders(cfg: Config, env: DistEnv, splits: dict[str, SampleSet], loader: str) -> dict[str, Any]:
    """train (sharded, augmented), val and test (sharded, plain) and, with --tta, tta (test views);
    `loader` is choose_loader's answer."""
    augment = None if cfg.augment == "none" else cfg.augment
    eval_bs = cfg.eval_batch_size or cfg.batch_size
    common = dict(
        image_size=cfg.image_size,
        normalize=cfg.normalize,
        loader=loader,
        device=env.device,
        rank=env.rank,
        world_size=env.world_size,
        seed=cfg.seed,
        num_threads=cfg.dali_threads if loader == "dali" else cfg.workers,
    )
    out: dict[str, Any] = {
        "train": build_loader(splits["train"], train=True, batch_size=cfg.batch_size, augment=augment, **common),
        "test": build_loader(splits["test"], train=False, batch_size=eval_bs, augment=None, **common),
    }
    if splits["val"] is splits["test"]:
        out["val"] = out["test"]
    else:
        out["val"] = build_loader(splits["val"], train=False, batch_size=eval_bs, augment=None, **common)
    if cfg.tta:
        out["tta"] = build_tta_loader(
            splits["test"], views=cfg.tta_views, augment=cfg.tta_views_recipe, batch_size=eval_bs, **common
        )
    return out


def protocol(cfg: Config) -> str:
    """How the checkpoint was selected and where the reported accuracy comes from."""
    if cfg.dataset == "rafdb":
        if cfg.holdout > 0:
            return (
                f"honest: checkpoint selected on a stratified {cfg.holdout:.0%} hold-out of RAF-DB train, "
                "accuracy reported on the test split"
            )
        return (
            "community: checkpoint selected on the RAF-DB test split (no validation split); test accuracy is optimistic"
        )
    name = "synthetic FER2013-format set" if cfg.recipe == "synthetic" else cfg.dataset
    return f"{name}: trained on Training, checkpoint selected on PublicTest, accuracy reported on PrivateTest"
