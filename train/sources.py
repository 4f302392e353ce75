"""Which data a recipe reads (real data sets or the cached synthetic set) and its loaders."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ddakern.builtin_set import builtin_cache

from .config import Config
from .data import SampleSet, build_loader, build_tta_loader, dali_available, make_synthetic
from .data.layouts import Layout
from .data.loader_choice import choose, probe_subset
from .data.run_data import load_recipe_data, write_split_record
from .data.skips import SkipLog
from .distributed import DistEnv, barrier, broadcast_object, gather_objects

log = logging.getLogger("train")

SYNTHETIC_SEED = 113
"""The built-in synthetic set is one fixed data set, whatever the training seed."""


def synthetic_root(cfg: Config) -> Path:
    """--data-root, else the built-in set's cache (builtin_cache)."""
    if cfg.data_root is not None:
        return Path(cfg.data_root)
    return builtin_cache(cfg.synthetic_difficulty)


def load_data(cfg: Config, env: DistEnv) -> Layout:
    """The run's data: {"train", "val", "test"} splits and how they were made. Real recipes detect the
    layout under --data-root (train.data.layouts); the built-in set is drawn once (rank 0 first), then
    read as its layout ("synthetic") like any other copy."""
    if not cfg.builtin:
        classes = [c.strip() for c in cfg.classes.split(",") if c.strip()] if cfg.classes else None
        return load_recipe_data(
            cfg.recipe,
            Path(cfg.data_root),
            layout=cfg.layout,
            classes=classes,
            holdout=cfg.holdout,
            seed=cfg.seed,
            skip_bad=cfg.skip_bad,
            announce=env.is_main,
        )
    root = synthetic_root(cfg)
    counts = dict(n_train=cfg.synthetic_train, n_val=cfg.synthetic_val, n_test=cfg.synthetic_test)
    counts["difficulty"] = cfg.synthetic_difficulty
    if env.is_main:
        make_synthetic(root, seed=SYNTHETIC_SEED, **counts)
    barrier(env)
    if not env.is_main:
        make_synthetic(root, seed=SYNTHETIC_SEED, **counts)  # already there: only checks the manifest
    return load_recipe_data(
        "synthetic", root, layout="synthetic", seed=cfg.seed, skip_bad=cfg.skip_bad, announce=env.is_main
    )


def record_splits(out: Path, data: Layout) -> None:
    """split.json in the run folder when a split was held out of train (which images, which seed)."""
    if data.holdout:
        write_split_record(out / "split.json", data)


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


def _augment(cfg: Config) -> str | None:
    """The training augmentation --augment names (None for "none")."""
    return None if cfg.augment == "none" else cfg.augment


def _loader_options(cfg: Config, loader: str) -> dict[str, Any]:
    """The build_loader options every loader of a run shares, for the input pipeline `loader`."""
    threads = cfg.dali_threads if loader == "dali" else cfg.workers
    return dict(
        image_size=cfg.image_size, normalize=cfg.normalize, seed=cfg.seed, skip_bad=cfg.skip_bad, num_threads=threads
    )


def settle_loader(cfg: Config, env: DistEnv, chosen: str, train: SampleSet) -> tuple[str, str]:
    """(loader, reason) for the run header and summary. --loader auto on CPU with DALI installed times both
    loaders on a few training batches of this data (rank 0; the answer is broadcast); a resumed run keeps
    choose_loader's answer so its DALI replay matches the interrupted run."""
    if cfg.loader != "auto":
        return chosen, f"--loader {cfg.loader}" + ("" if chosen == cfg.loader else " (nvidia-dali not installed)")
    cuda = env.device.type == "cuda"
    if cuda or not dali_available() or cfg.resume is not None:
        return chosen, "auto: " + ("DALI with GPU decode on CUDA" if cuda and chosen == "dali" else chosen)
    pick = None
    if env.is_main:
        probe = probe_subset(train, cfg.batch_size)

        def make(name: str):  # with the run's --skip-bad: a bad file stops no probe
            kw = _loader_options(cfg, name)
            return build_loader(probe, train=True, batch_size=cfg.batch_size, augment=_augment(cfg), loader=name, **kw)

        pick = choose("auto", cuda=False, dali=True, make=make)
    return tuple(broadcast_object(pick, env))


def make_loaders(cfg: Config, env: DistEnv, splits: dict[str, SampleSet], loader: str) -> dict[str, Any]:
    """train (sharded, augmented), val and test (sharded, plain) and, with --tta, tta (test views);
    `loader` is choose_loader's answer."""
    eval_bs = cfg.eval_batch_size or cfg.batch_size
    common = dict(
        _loader_options(cfg, loader), loader=loader, device=env.device, rank=env.rank, world_size=env.world_size
    )
    out: dict[str, Any] = {
        "train": build_loader(
            splits["train"],
            train=True,
            batch_size=cfg.batch_size,
            augment=_augment(cfg),
            balanced=cfg.balanced,
            **common,
        ),
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


def collect_skips(cfg: Config, env: DistEnv, loaders: dict[str, Any]) -> SkipLog:
    """The bad files every loader of every rank skipped so far with --skip-bad (a collective: all ranks
    call it; without --skip-bad an empty log, no communication)."""
    if not cfg.skip_bad:
        return SkipLog()
    mine = {id(ld): ld.skips for ld in loaders.values()}  # val may be the test loader itself
    per_rank = gather_objects(SkipLog().merge(mine.values()), env)
    return SkipLog().merge(per_rank)


def protocol(cfg: Config, data: Layout) -> str:
    """How the checkpoint was selected and where the reported accuracy comes from."""
    return f"{data.selection}; accuracy reported on the test split ({data.name} layout)"
