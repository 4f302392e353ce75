"""The bridge from a run's recipe to the layout detector: which data-set family and class count a recipe
reads, and the split record a run folder keeps (split.json)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from ddakern.atomic import write_text

from .layouts import Layout, describe, holdout_record, load_layout

log = logging.getLogger("train.data")

RECIPE_FAMILY: dict[str, tuple[str, int]] = {
    "fer2013": ("fer2013", 7),
    "ferplus": ("ferplus", 8),
    "rafdb": ("rafdb", 7),
    "affectnet7": ("affectnet", 7),
    "affectnet8": ("affectnet", 8),
    "folders": ("folders", 0),
    "synthetic": ("synthetic", 7),
}
"""recipe -> (data-set family searched by the detector, class count: 0 = from the folders)."""


def load_recipe_data(
    recipe: str,
    root: Path,
    *,
    layout: str | None = None,
    classes: Sequence[str] | None = None,
    holdout: float | None = None,
    seed: int = 113,
    skip_bad: bool = False,
    announce: bool = True,
) -> Layout:
    """The recipe's data under `root`, its layout detected (or `layout`); logs describe()'s line."""
    family, num_classes = RECIPE_FAMILY[recipe]
    found = load_layout(
        root,
        family=None if layout else family,
        layout=layout,
        classes=classes,
        num_classes=num_classes or 8,
        holdout=holdout,
        seed=seed,
        skip_bad=skip_bad,
    )
    if announce:
        log.info(describe(found))
    return found


def write_split_record(path: Path, layout: Layout) -> None:
    """split.json: per-split and per-class counts, and the files (or rows) each hold-out took (atomic)."""
    write_text(path, json.dumps(holdout_record(layout), indent=1) + "\n")
