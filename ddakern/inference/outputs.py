"""Where `predict` puts its outputs and how a failed write reads.

- Output names never collide: every input gets a stem that is the shortest tail of its path (as given)
  that no other input shares, folders mirrored as subfolders: `a/clip.mp4` and `b/clip.mp4` become
  `annotated/a/clip.mp4` and `annotated/b/clip.mp4`; a lone `photos/x.jpg` stays `annotated/x.jpg`.
  The stems depend only on the set of inputs, so a resumed run names everything as the first did.
- A write that fails is an `OutputError`: one line naming the file and the cause.
- Temporary files (ddakern.atomic's `.<name>.<8 random chars><suffix>`) left by a killed run are found
  and removed at the next start.
"""

from __future__ import annotations

import errno
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path, PurePath

from ddakern.atomic import WriteError

WRITABLE_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
"""Suffixes an annotated image keeps (OpenCV 4.x writes them for RGB); others become .png."""

OUTPUT_FOLDERS = ("annotated", "attention")
TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}(\.[A-Za-z0-9]+)?$")
"""ddakern.atomic's temporary names: `.<target name>.<mkstemp's 8 random characters><suffix>`."""


class OutputError(WriteError):
    """A result file that could not be written; `str()` is one line: `cannot write PATH: cause`.

    A WriteError whose cause may also be a sentence (OpenCV reports no errno), so the atomic writers
    pass it through unchanged."""

    def __init__(self, path: str | Path, cause: str | BaseException) -> None:
        self.path = Path(path)
        self.cause = reason(cause) if isinstance(cause, BaseException) else cause
        OSError.__init__(self, f"cannot write {self.path}: {self.cause}")

    def __str__(self) -> str:
        return self.args[0]


def reason(e: BaseException) -> str:
    """The cause of a failed write in a few lowercase words ("no space left on device")."""
    if isinstance(e, OutputError):
        return e.cause
    if isinstance(e, OSError) and e.errno is not None:
        return (e.strerror or errno.errorcode.get(e.errno, str(e.errno))).lower()
    text = str(e).strip().splitlines()
    return text[-1] if text else type(e).__name__


def _parts(name: str, path: Path | None) -> list[str]:
    """The path's components without root, '.' and '..'; the last one is the stem (suffix removed)."""
    p = PurePath(path) if path is not None else PurePath(name.replace(":", "-"))
    parts = [x for x in p.parts if x not in (p.anchor, ".", "..", "")] or ["input"]
    parts[-1] = PurePath(parts[-1]).stem or parts[-1]
    return parts


def output_stems(inputs: Iterable[tuple[str, Path | None]]) -> dict[str, str]:
    """{input name: unique output stem (posix, no suffix)} for (name, path) pairs; see the module doc."""
    items = list(dict.fromkeys(inputs))
    parts = {name: _parts(name, path) for name, path in items}
    depth = {name: 1 for name, _ in items}
    while True:
        groups: dict[str, list[str]] = defaultdict(list)
        for name, _ in items:
            groups["/".join(parts[name][-depth[name] :])].append(name)
        clashes = [names for names in groups.values() if len(names) > 1]
        grown = False
        for names in clashes:
            for n in names:
                if depth[n] < len(parts[n]):
                    depth[n] += 1
                    grown = True
        if not grown:
            break
    stems = {name: "/".join(parts[name][-depth[name] :]) for name, _ in items}
    for names in clashes:  # same path up to the suffix (x.jpg and x.png in one folder): keep the suffix
        for n in names:
            path = dict(items)[n]
            suffix = (path.suffix if path is not None else "").lstrip(".")
            stems[n] = f"{stems[n]}_{suffix}" if suffix else stems[n]
    return stems


def annotated_suffix(path: Path | None) -> str:
    """The suffix of an image's annotated copy: its own when OpenCV writes it, else .png."""
    suffix = path.suffix.lower() if path is not None else ""
    return suffix if suffix in WRITABLE_IMAGE_SUFFIXES else ".png"


def stale_temps(out: Path, own: Iterable[str]) -> list[Path]:
    """Temporary files of ddakern.atomic for the files named `own` in OUT, and any under its output
    folders (left by a killed run); other hidden files in OUT are the user's and stay."""
    prefixes = tuple(f".{name}." for name in own)
    found = [p for p in out.glob(".*") if p.is_file() and p.name.startswith(prefixes) and TEMP_NAME.match(p.name)]
    for folder in OUTPUT_FOLDERS:
        if (out / folder).is_dir():
            found += [p for p in (out / folder).rglob(".*") if p.is_file() and TEMP_NAME.match(p.name)]
    return sorted(found)
