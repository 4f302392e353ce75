"""load_splits: one entry point for the three supported data sets."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .errors import DataError
from .fer2013 import find_fer2013_csv, find_ferplus_csv, read_fer2013, read_ferplus
from .rafdb import find_rafdb, read_rafdb
from .samples import SampleSet

log = logging.getLogger("train.data")

DATASETS = ("fer2013", "ferplus", "rafdb")


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(keep, holdout) sorted index arrays; each class gives round(fraction * count) samples to holdout."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        held.append(rng.permutation(idx)[: int(round(fraction * idx.size))])
    hold = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    keep = np.setdiff1d(np.arange(labels.size), hold)
    return keep, hold


def load_splits(
    dataset: str, root: Path, *, skip_bad: bool = False, holdout: float = 0.0, seed: int = 113
) -> dict[str, SampleSet]:
    """{"train", "val", "test"} SampleSets of `dataset` found under `root`.

    fer2013/ferplus: train = Training, val = PublicTest, test = PrivateTest (`holdout` is ignored).
    rafdb: train/test from the label file; val = test (community protocol) when holdout == 0, else a
    stratified, seeded `holdout` fraction of train (honest protocol).
    """
    root = Path(root)
    if dataset == "fer2013":
        splits = read_fer2013(find_fer2013_csv(root), skip_bad=skip_bad)
    elif dataset == "ferplus":
        splits = read_ferplus(find_fer2013_csv(root), find_ferplus_csv(root), skip_bad=skip_bad)
    elif dataset == "rafdb":
        label_file, image_dir = find_rafdb(root)
        raw = read_rafdb(label_file, image_dir, skip_bad=skip_bad)
        train, test = raw["train"], raw["test"]
        if holdout > 0:
            keep, hold = stratified_holdout(train.labels, holdout, seed)
            val = train.subset(hold)
            skipped = train.skipped
            train = train.subset(keep)
            train.skipped = skipped
            log.info(f"rafdb: validation = {hold.size} held-out train images ({holdout:.0%}, seed {seed})")
        else:
            val = test
            log.info("rafdb: validation = test split (community protocol)")
        splits = {"train": train, "val": val, "test": test}
    else:
        raise DataError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    if dataset != "rafdb" and holdout > 0:
        log.warning(f"{dataset}: holdout={holdout} ignored; PublicTest is the validation split")
    for name, s in splits.items():
        if len(s) == 0:
            raise DataError(f"{s.source}: split {name!r} of {dataset} is empty")
    return splits
