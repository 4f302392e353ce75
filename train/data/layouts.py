"""Which copy of which data set is under a folder, found without configuration, and its splits.

`load_layout(root, family=...)` detects the layout (or takes `layout=` when several match), reads it with
its reader and completes the splits: a missing validation split is a stratified, seeded hold-out of
train (recorded in `Layout.holdout`), a missing test split likewise. `describe()` is the one line a run
prints. The README's "Data layouts" section shows each layout's folder tree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .affectnet import find_affectnet_npy, find_affectnet_official, read_affectnet_npy, read_affectnet_official
from .errors import DataError
from .fer2013 import find_fer2013_csv, find_ferplus_csv, read_fer2013, read_ferplus
from .fer_kaggle import (
    ICML_CSV,
    TEST_CSV,
    TRAIN_CSV,
    csv_has_labels,
    is_fer_folders,
    read_fer_folders,
    read_icml_csv,
    read_kaggle_csv_pair,
    unlabelled_test_message,
)
from .folders import is_class_folder_set, read_folders
from .rafdb import find_rafdb, read_rafdb
from .rafdb_kaggle import find_rafdb_kaggle, read_rafdb_kaggle
from .samples import SampleSet
from .scan import class_counts, subdirs
from .synthetic import MANIFEST, describe_noise, read_manifest

log = logging.getLogger("train.data")

DEFAULT_HOLDOUT = 0.1
"""Fraction of train held out for selection (and for test, where a copy has none) unless told."""


@dataclass(frozen=True)
class LoadOptions:
    """Reader options: --classes (class folders), 7 or 8 AffectNet classes, --skip-bad."""

    classes: tuple[str, ...] | None = None
    num_classes: int = 8
    skip_bad: bool = False


@dataclass(frozen=True)
class LayoutSpec:
    """A known layout: its data-set family, how to recognise it (cheap) and how to read it."""

    name: str
    family: str
    find: Callable[[Path], bool]
    read: Callable[[Path, LoadOptions], dict[str, SampleSet]]
    facts: Callable[[Path], dict[str, Any]] | None = None
    """What a run's report should know about the copy beyond its splits (the built-in set's label noise)."""
    selection: str | None = None
    """How the checkpoint is selected where the copy has its own validation split (default: generic)."""


@dataclass
class Layout:
    """What `load_layout` found: the layout's name, {"train", "val", "test"} and how they were made."""

    name: str
    root: Path
    splits: dict[str, SampleSet]
    val_from_train: bool
    """True when the copy has no validation split: val is held out of train, and runs also report the
    checkpoint selected on test (the published protocol)."""
    selection: str
    holdout: dict[str, Any] = field(default_factory=dict)
    """{"val"/"test": {"fraction", "seed", "of"}} for every split held out of train (the record)."""
    facts: dict[str, Any] = field(default_factory=dict)
    """LayoutSpec.facts of the copy (summary.json's "data" holds them)."""


def _file(root: Path, name: str) -> Path | None:
    if root.is_file():
        return root if root.name == name else None
    return root / name if (root / name).is_file() else None


def _is_fer_csv(root: Path) -> bool:
    if root.is_file() and root.name in (ICML_CSV, TRAIN_CSV, TEST_CSV, "fer2013new.csv"):
        return False
    try:
        find_fer2013_csv(root)
    except DataError:
        return False
    return True


def _is_ferplus(root: Path) -> bool:
    """FERPlus needs its own label file (fer2013new.csv, found in a folder) beside FER2013's CSV: a lone
    fer2013.csv, folder or file, is FER2013 only."""
    if root.is_file():
        return False  # one file cannot hold both
    try:
        find_ferplus_csv(root)
    except DataError:
        return False
    return _is_fer_csv(root)


def _is_kaggle_csv(root: Path) -> bool:
    train = _file(root, TRAIN_CSV)
    if train is not None:
        return csv_has_labels(train) and _has_pixels(train)
    test = _file(root, TEST_CSV)
    return test is not None and _has_pixels(test)


def _has_pixels(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return "pixels" in [h.strip() for h in fh.readline().split(",")]


def _is_rafdb(root: Path) -> bool:
    try:
        find_rafdb(root)
    except DataError as e:
        return "image folder not found" in str(e)  # label file there: let the reader say what is missing
    return True


def _read_rafdb(root: Path, o: LoadOptions) -> dict[str, SampleSet]:
    label_file, image_dir = find_rafdb(root)
    return read_rafdb(label_file, image_dir, skip_bad=o.skip_bad)


def _read_affectnet(root: Path, o: LoadOptions) -> dict[str, SampleSet]:
    found = find_affectnet_official(root)
    if found is None:
        raise DataError(f"{root}: no Manually_Annotated_Images/ with training.csv and validation.csv")
    return read_affectnet_official(*found, o.num_classes, skip_bad=o.skip_bad)


def _read_rafdb_kaggle(root: Path, o: LoadOptions) -> dict[str, SampleSet]:
    dataset = find_rafdb_kaggle(root)
    if dataset is None:
        raise DataError(f"{root}: no DATASET/train/1..7 and DATASET/test/1..7 folders")
    return read_rafdb_kaggle(dataset, skip_bad=o.skip_bad)


def _icml_path(root: Path) -> Path:
    path = _file(root, ICML_CSV)
    if path is None:
        raise DataError(f"{root}: {ICML_CSV} not found")
    return path


def _read_fer_csv(root: Path, o: LoadOptions) -> dict[str, SampleSet]:
    return read_fer2013(find_fer2013_csv(root), skip_bad=o.skip_bad)


def _read_icml(root: Path, o: LoadOptions) -> dict[str, SampleSet]:
    return read_icml_csv(_icml_path(root), skip_bad=o.skip_bad)


def _read_kaggle_csv(root: Path, o: LoadOptions) -> dict[str, SampleSet]:
    return read_kaggle_csv_pair(root.parent if root.is_file() else root, skip_bad=o.skip_bad)


def _read_ferplus(root: Path, o: LoadOptions) -> dict[str, SampleSet]:
    return read_ferplus(find_fer2013_csv(root), find_ferplus_csv(root), skip_bad=o.skip_bad)


def _read_affectnet_npy(root: Path, o: LoadOptions) -> dict[str, SampleSet]:
    return read_affectnet_npy(find_affectnet_npy(root) or root, o.num_classes, skip_bad=o.skip_bad)


def _read_folders(root: Path, o: LoadOptions) -> dict[str, SampleSet]:
    return read_folders(root, o.classes)


def _is_builtin(root: Path) -> bool:
    """The built-in set (train.data.synthetic): a folder whose manifest says so."""
    return root.is_dir() and (root / MANIFEST).is_file() and read_manifest(root) is not None


def _read_builtin(root: Path, o: LoadOptions) -> dict[str, SampleSet]:
    """Its FER2013-format copy: Training, PublicTest (validation) and PrivateTest (test)."""
    return read_fer2013(root / "fer2013" / "fer2013.csv", skip_bad=o.skip_bad)


def _builtin_facts(root: Path) -> dict[str, Any]:
    return describe_noise(read_manifest(root) or {})


_SPECS = (
    LayoutSpec("fer2013-csv", "fer2013", _is_fer_csv, _read_fer_csv),
    LayoutSpec("fer2013-icml-csv", "fer2013", lambda r: _file(r, ICML_CSV) is not None, _read_icml),
    LayoutSpec("fer2013-kaggle-csv", "fer2013", _is_kaggle_csv, _read_kaggle_csv),
    LayoutSpec("fer2013-folders", "fer2013", is_fer_folders, lambda r, o: read_fer_folders(r)),
    LayoutSpec("ferplus-csv", "ferplus", _is_ferplus, _read_ferplus),
    LayoutSpec("rafdb", "rafdb", _is_rafdb, _read_rafdb),
    LayoutSpec("rafdb-kaggle", "rafdb", lambda r: find_rafdb_kaggle(r) is not None, _read_rafdb_kaggle),
    LayoutSpec("affectnet", "affectnet", lambda r: find_affectnet_official(r) is not None, _read_affectnet),
    LayoutSpec("affectnet-npy", "affectnet", lambda r: find_affectnet_npy(r) is not None, _read_affectnet_npy),
    LayoutSpec("folders", "folders", is_class_folder_set, _read_folders),
    LayoutSpec(
        "synthetic",
        "synthetic",
        _is_builtin,
        _read_builtin,
        _builtin_facts,
        "built-in set (FER2013 format): trained on Training, checkpoint selected on PublicTest",
    ),
)
LAYOUTS: dict[str, LayoutSpec] = {spec.name: spec for spec in _SPECS}
FAMILIES = ("fer2013", "ferplus", "rafdb", "affectnet", "folders", "synthetic")


def _matches(root: Path, family: str | None) -> list[str]:
    if family in (None, "synthetic") and _is_builtin(root):
        return ["synthetic"]  # its manifest says what it is; its FER2013 and RAF-DB copies are not rivals
    specific = [s for s in LAYOUTS.values() if s.family not in ("folders", "synthetic") and family in (None, s.family)]
    found = [s.name for s in specific if s.find(root)]
    if not found and family in (None, "folders") and is_class_folder_set(root):
        found = ["folders"]  # the generic reader is the fallback, never a rival of a specific layout
    return found


ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tbz2", ".txz", ".gz", ".bz2", ".xz", ".zst", ".7z", ".rar")
_ARCHIVE_MAGIC = (
    b"PK\x03\x04",
    b"\x1f\x8b",
    b"BZh",
    b"\xfd7zXZ\x00",
    b"7z\xbc\xaf\x27\x1c",
    b"Rar!",
    b"\x28\xb5\x2f\xfd",
)
"""First bytes of zip, gzip, bzip2, xz, 7z, rar and zstd files."""


def _is_archive(path: Path) -> bool:
    """A packed download (zip, tar and its compressed forms, 7z, rar), by its name or its first bytes."""
    if not path.is_file():
        return False
    if path.suffix.lower() in ARCHIVE_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return False
    return head.startswith(_ARCHIVE_MAGIC) or head[257:262] == b"ustar"  # ustar: an uncompressed tar


def check_not_archive(root: Path) -> None:
    """Refuse a packed download given as the data folder, in one line (the readers would misread it)."""
    if _is_archive(Path(root)):
        raise DataError(f"{root} is an archive; unpack it first (unzip / tar -xf / 7z x) and give the unpacked folder")


def detect_layout(root: Path, family: str | None = None) -> tuple[str, Path]:
    """(layout name, the folder it is in): root itself, or its only sub-folder (an unpacked archive)."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: data folder does not exist")
    check_not_archive(root)
    if family is not None and family not in FAMILIES:
        raise DataError(f"unknown data-set family {family!r}; expected one of {', '.join(FAMILIES)}")
    base = root
    for _ in range(3):
        found = _matches(base, family)
        if len(found) > 1:
            raise DataError(f"{base}: more than one layout matches ({', '.join(found)}); choose one with --layout")
        if found:
            return found[0], base
        inner = subdirs(base) if base.is_dir() else []
        if len(inner) != 1:
            break
        base = base / inner[0]
    packed = sorted(p.name for p in base.iterdir() if p.suffix.lower() in ARCHIVE_SUFFIXES) if base.is_dir() else []
    if packed:
        raise DataError(f"{base}: no known data layout, but archive(s) {', '.join(packed[:3])}: unpack them first")
    names = [s.name for s in LAYOUTS.values() if family in (None, s.family)]
    raise DataError(f"{root}: no known data layout found (looked for {', '.join(names)}); see README 'Data layouts'")


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


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(keep, hold) sorted indices: each class gives round(fraction * count) samples, at least one when it
    has two or more (so small class-folder sets still get every class in each split)."""
    keep, hold = stratified_holdout(labels, fraction, seed)
    short = [c for c in np.unique(labels) if np.sum(labels[hold] == c) == 0 and np.sum(labels == c) >= 2]
    if not short:
        return keep, hold
    rng = np.random.default_rng([seed, 1])
    extra = [rng.choice(np.flatnonzero(labels == c)) for c in short]
    hold = np.sort(np.concatenate([hold, np.asarray(extra, np.int64)]))
    return np.setdiff1d(np.arange(labels.size), hold), hold


def _split_off(samples: SampleSet, fraction: float, seed: int) -> tuple[SampleSet, SampleSet]:
    keep, hold = stratified_split(samples.labels, fraction, seed)
    kept = samples.subset(keep)
    kept.skipped = samples.skipped
    return kept, samples.subset(hold)


def complete_splits(
    raw: dict[str, SampleSet], name: str, holdout: float | None, seed: int
) -> tuple[dict[str, SampleSet], bool, str, dict[str, Any]]:
    """(train/val/test, val_from_train, selection text, hold-out record) from the splits a copy has.

    holdout None: DEFAULT_HOLDOUT where a split is missing; 0: no validation hold-out (select on test).
    """
    fraction = DEFAULT_HOLDOUT if holdout is None else holdout
    record: dict[str, Any] = {}
    splits = dict(raw)
    if "all" in splits:  # class folders without split folders: seeded 80/10/10
        rest, splits["test"] = _split_off(splits.pop("all"), DEFAULT_HOLDOUT, seed)
        record["test"] = {"fraction": DEFAULT_HOLDOUT, "seed": seed, "of": "all images"}
        splits["train"], splits["val"] = _split_off(rest, DEFAULT_HOLDOUT / (1 - DEFAULT_HOLDOUT), seed + 1)
        record["val"] = {"fraction": DEFAULT_HOLDOUT, "seed": seed + 1, "of": "all images"}
        return splits, False, "validation split held out of the images (stratified)", record
    if "test" not in splits and "val" in splits:  # train + val only: val is the test split (AffectNet style)
        splits["test"] = splits.pop("val")
    if "test" not in splits:  # Kaggle train.csv with the unlabelled test.csv
        splits["train"], splits["test"] = _split_off(splits["train"], DEFAULT_HOLDOUT, seed + 7)
        record["test"] = {"fraction": DEFAULT_HOLDOUT, "seed": seed + 7, "of": "train"}
    if "val" in splits:
        return splits, False, f"{name}: checkpoint selected on its validation split", record
    if fraction == 0:
        splits["val"] = splits["test"]
        return splits, False, "community: checkpoint selected on the test split (optimistic)", record
    splits["train"], splits["val"] = _split_off(splits["train"], fraction, seed)
    record["val"] = {"fraction": fraction, "seed": seed, "of": "train"}
    selection = (
        f"no validation split: checkpoint selected on a stratified {fraction:.0%} hold-out of train (seed {seed}); "
        "the test-selected checkpoint (published protocol) is reported beside it"
    )
    return splits, True, selection, record


def load_layout(
    root: Path,
    *,
    family: str | None = None,
    layout: str | None = None,
    classes: Sequence[str] | None = None,
    num_classes: int = 8,
    holdout: float | None = None,
    seed: int = 113,
    skip_bad: bool = False,
) -> Layout:
    """Detect (or take `layout`), read and complete the splits of the data set under `root`."""
    root = Path(root)
    check_not_archive(root)
    if layout is None:
        layout, base = detect_layout(root, family)
    elif layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    else:
        base = root
    options = LoadOptions(tuple(classes) if classes else None, num_classes, skip_bad)
    raw = LAYOUTS[layout].read(base, options)
    if (
        layout == "fer2013-kaggle-csv"
        and "test" not in raw
        and (base.parent if base.is_file() else base).joinpath(TEST_CSV).is_file()
    ):
        log.warning(unlabelled_test_message(base / TEST_CSV) + "; the test split is held out of train.csv instead")
    splits, val_from_train, selection, record = complete_splits(raw, layout, holdout, seed)
    for name, s in splits.items():
        if len(s) == 0:
            raise DataError(f"{s.source}: split {name!r} of layout {layout} is empty")
    facts = LAYOUTS[layout].facts(base) if LAYOUTS[layout].facts else {}
    if LAYOUTS[layout].selection and "val" in raw:
        selection = LAYOUTS[layout].selection
    return Layout(layout, base, splits, val_from_train, selection, record, facts)


def describe(layout: Layout) -> str:
    """One line: the layout found, images per split and per class, and how validation was made."""
    parts = []
    for name in ("train", "val", "test"):
        s = layout.splits[name]
        if name == "val" and s is layout.splits["test"]:
            parts.append("val = test")
            continue
        counts = ", ".join(f"{c} {n}" for c, n in class_counts(s).items())
        parts.append(f"{name} {len(s)} ({counts})")
    noise = layout.facts.get("label_noise", {}).get("rate")
    if noise:
        parts.append(f"{layout.facts.get('builtin_set', '')} set, {noise:.0%} of train/val labels changed".lstrip())
    return f"data: layout {layout.name} in {layout.root} | " + " | ".join(parts) + f" | {layout.selection}"


def holdout_record(layout: Layout) -> dict[str, Any]:
    """JSON-ready record of the splits: counts per class, and which images each hold-out took."""
    out: dict[str, Any] = {"layout": layout.name, "root": str(layout.root), "selection": layout.selection}
    out.update(layout.facts)
    for name, s in layout.splits.items():
        entry: dict[str, Any] = {"images": len(s), "per_class": class_counts(s)}
        if name in layout.holdout:
            entry["held_out"] = layout.holdout[name]
            entry["files"] = [str(f) for f in s.files] if s.kind == "files" else None
            entry["labels"] = np.asarray(s.labels).tolist()
        out[name] = entry
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m train.data.layouts DIR [--family F] [--layout L] [--classes a,b]`: print what is there."""
    import argparse
    import sys

    from ddakern.cli import prog

    name = f"{__package__}.layouts"
    p = argparse.ArgumentParser(prog=prog(name, f"python -m {name}"), description="Show the data layout found in DIR.")
    p.add_argument("root", type=Path)
    p.add_argument("--family", choices=FAMILIES)
    p.add_argument("--layout", choices=list(LAYOUTS))
    p.add_argument("--classes", help="label order of class folders, comma-separated")
    p.add_argument("--num-classes", type=int, default=8, choices=(7, 8), help="AffectNet classes")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        found = load_layout(
            args.root,
            family=args.family,
            layout=args.layout,
            classes=args.classes.split(",") if args.classes else None,
            num_classes=args.num_classes,
        )
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(describe(found))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
