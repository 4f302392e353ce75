"""Any class-folder set (CK+, JAFFE, SFEW, ExpW, a user's own): `[train|val|test/]<class>/<images>`.

Class names map onto the canonical FER label set (train.data.labels) where they match; otherwise the
label order comes from --classes. Split folders are used where present; train.data.layouts fills in the
missing ones with seeded stratified splits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .errors import DataError
from .labels import order_class_folders
from .samples import SampleSet
from .scan import has_images, read_class_folders, subdirs

SPLIT_FOLDER_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation", "dev"),
    "test": ("test", "testing"),
}


def split_folders(root: Path) -> dict[str, Path]:
    """{split: folder} for the split folders (any case) directly under root."""
    found: dict[str, Path] = {}
    for name in subdirs(root):
        for split, names in SPLIT_FOLDER_NAMES.items():
            if name.lower() in names:
                if split in found:
                    raise DataError(f"{root}: both {found[split].name}/ and {name}/ look like the {split} split")
                found[split] = Path(root) / name
    return found


def is_class_folder_set(root: Path) -> bool:
    """True when root has split folders of class folders, or class folders holding images directly."""
    splits = split_folders(root)
    if splits:
        return "train" in splits and bool(subdirs(splits["train"]))
    folders = subdirs(root)
    return len(folders) >= 2 and any(has_images(Path(root) / f) for f in folders[:4])


def read_folders(root: Path, classes: Sequence[str] | None = None) -> dict[str, SampleSet]:
    """The splits present: {"train", ["val"], ["test"]} from split folders, or {"all"} without them.

    Every split has the same class folders as train; an empty class folder is an error naming it.
    """
    root = Path(root)
    splits = split_folders(root)
    if splits and "train" not in splits:
        raise DataError(f"{root}: split folders {', '.join(p.name for p in splits.values())} but no train/")
    dirs = splits or {"all": root}
    first = dirs.get("train", root)
    folders = subdirs(first)
    if not folders:
        raise DataError(f"{first}: no class folders")
    order = order_class_folders(folders, classes, str(first))
    out: dict[str, SampleSet] = {}
    for split, d in dirs.items():
        extra = sorted(set(subdirs(d)) - set(folders))
        if extra:
            raise DataError(f"{d}: class folder(s) {', '.join(extra)} not in {first}")
        out[split] = read_class_folders(d, order)
    return out
