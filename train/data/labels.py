"""Published label tables and the mapping of class-folder names onto the canonical FER label set."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import DataError
from .samples import FER2013_CLASSES

# AffectNet `expression` 0..7 (8 none, 9 uncertain, 10 no-face are not emotions).
AFFECTNET8_CLASSES: tuple[str, ...] = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
AFFECTNET7_CLASSES: tuple[str, ...] = AFFECTNET8_CLASSES[:7]
AFFECTNET_NON_EMOTIONS: dict[int, str] = {8: "none", 9: "uncertain", 10: "no-face"}

# Canonical label set of class-folder sets: FER2013's order, then contempt (CK+, AffectNet-8).
CANONICAL_CLASSES: tuple[str, ...] = FER2013_CLASSES + ("contempt",)
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "angry": ("anger", "angry", "an", "ang", "mad"),
    "disgust": ("disgust", "disgusted", "di", "dis"),
    "fear": ("fear", "fearful", "afraid", "scared", "fe"),
    "happy": ("happy", "happiness", "joy", "ha", "hap", "smile"),
    "sad": ("sad", "sadness", "sa"),
    "surprise": ("surprise", "surprised", "su", "sur"),
    "neutral": ("neutral", "ne", "neu", "calm"),
    "contempt": ("contempt", "co", "con"),
}
SYNONYM_TO_CANONICAL: dict[str, str] = {syn: name for name, syns in _SYNONYMS.items() for syn in syns}


def canonical_name(folder: str) -> str | None:
    """The canonical FER class of a folder name (case, spaces, '-' and '_' ignored), or None."""
    key = folder.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
    return SYNONYM_TO_CANONICAL.get(key)


def order_class_folders(folders: Sequence[str], classes: Sequence[str] | None, where: str) -> list[tuple[str, str]]:
    """[(folder, class name)] in label order.

    classes given (--classes): that order; each entry names a folder exactly, or its canonical class.
    Otherwise every folder must be a FER expression name (synonyms allowed) and the order is canonical.
    """
    if classes:
        return _explicit_order(folders, classes, where)
    mapped = {f: canonical_name(f) for f in folders}
    unknown = sorted(f for f, c in mapped.items() if c is None)
    if unknown:
        raise DataError(
            f"{where}: class folder(s) {', '.join(unknown)} are not FER expression names; "
            "give the label order with --classes NAME,NAME,..."
        )
    by_class: dict[str, str] = {}
    for f, c in mapped.items():
        if c in by_class:
            raise DataError(f"{where}: folders {by_class[c]!r} and {f!r} both mean {c!r}")
        by_class[c] = f
    return [(by_class[c], c) for c in CANONICAL_CLASSES if c in by_class]


def _explicit_order(folders: Sequence[str], classes: Sequence[str], where: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name in classes:
        match = [f for f in folders if f == name] or [
            f for f in folders if canonical_name(f) is not None and canonical_name(f) == canonical_name(name)
        ]
        if not match:
            have = ", ".join(folders)
            raise DataError(f"{where}: --classes names {name!r} but there is no such class folder ({have})")
        out.append((match[0], name))
    extra = sorted(set(folders) - {f for f, _ in out})
    if extra:
        raise DataError(f"{where}: class folder(s) {', '.join(extra)} are not in --classes {','.join(classes)}")
    if len({f for f, _ in out}) != len(out):
        raise DataError(f"{where}: --classes {','.join(classes)} names a folder twice")
    return out
