"""load_splits: the FER2013, FERPlus and RAF-DB readers behind one call, for the reader tests.

Runs read data through train.data.layouts (load_layout); this helper calls the same readers directly, so
the reader tests pin each reader's own messages (file not found, bad row) and RAF-DB's seeded hold-out."""

from __future__ import annotations

import logging
from pathlib import Path

from train.data.errors import DataError
from train.data.fer2013 import find_fer2013_csv, find_ferplus_csv, read_fer2013, read_ferplus
from train.data.layouts import stratified_holdout
from train.data.rafdb import find_rafdb, read_rafdb
from train.data.samples import SampleSet

log = logging.getLogger("train.data")

DATASETS = ("fer2013", "ferplus", "rafdb")


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
