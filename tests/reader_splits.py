"""load_splits: the FER2013, FERPlus and RAF-DB readers behind one call, for the reader tests.

Runs read data through train.data.layouts (load_layout, which adds the validation hold-out and the
empty-split check); this helper calls the readers directly, so the reader tests pin each reader's own
messages (file not found, bad row). RAF-DB's validation split is its test split (no hold-out here)."""

from __future__ import annotations

from pathlib import Path

from train.data.fer2013 import find_fer2013_csv, find_ferplus_csv, read_fer2013, read_ferplus
from train.data.rafdb import find_rafdb, read_rafdb
from train.data.samples import SampleSet


def load_splits(dataset: str, root: Path, *, skip_bad: bool = False) -> dict[str, SampleSet]:
    """{"train", "val", "test"} SampleSets of `dataset` (fer2013, ferplus or rafdb) found under `root`."""
    root = Path(root)
    if dataset == "fer2013":
        return read_fer2013(find_fer2013_csv(root), skip_bad=skip_bad)
    if dataset == "ferplus":
        return read_ferplus(find_fer2013_csv(root), find_ferplus_csv(root), skip_bad=skip_bad)
    if dataset != "rafdb":
        raise ValueError(f"reader_splits: no reader for {dataset!r}")
    raw = read_rafdb(*find_rafdb(root), skip_bad=skip_bad)
    return {"train": raw["train"], "val": raw["test"], "test": raw["test"]}
