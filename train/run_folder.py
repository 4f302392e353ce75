"""The run folder (--out): checked before anything is written, never silently overwritten, left tidy.

- A path that is a file, sits under a file, or cannot be written is refused in one line.
- A folder that already holds a run's results is refused unless the run resumes it or --overwrite says so.
- Temporaries of an interrupted atomic save (`.best.pt.*.tmp`) are removed at start.
- A folder this run created and left empty (it failed before writing anything) is removed again.
- Results get the user's umask (mkstemp creates 0600 files): ddakern.atomic writes them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

RESULTS = ("last.pt", "best.pt", "summary.json", "metrics.jsonl")
"""Files whose presence means the folder holds (part of) a run."""


class RunFolderError(ValueError):
    """A --out that cannot be used; one line naming the path."""


def _first_file_above(path: Path) -> Path | None:
    for parent in [path, *path.parents]:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def check_out(out: Path, *, flag: str = "--out", resuming: bool = False, overwrite: bool = False) -> bool:
    """Create `out` if needed after checking it can hold a run; returns True when this call created it."""
    out = Path(out)
    blocker = _first_file_above(out)
    if blocker == out:
        raise RunFolderError(f"{flag} {out}: is a file, not a folder")
    if blocker is not None:
        raise RunFolderError(f"{flag} {out}: {blocker} is a file, so no folder can be made under it")
    if out.is_dir() and not resuming and not overwrite:
        held = [name for name in RESULTS if (out / name).exists()]
        if held:
            raise RunFolderError(
                f"{flag} {out} already holds a run ({', '.join(held)}); continue it with --resume auto, "
                "choose a new folder, or pass --overwrite to replace it"
            )
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        if created:
            remove_if_empty(out)
        raise RunFolderError(f"{flag} {out}: cannot write there ({e.strerror or e})") from None
    return created


def clean_stale_temporaries(out: Path) -> list[Path]:
    """Remove what interrupted atomic saves left in `out` (`.<name>.<random>.tmp`); returns the removed."""
    removed = []
    for p in Path(out).glob(".*.tmp"):
        if p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def remove_if_empty(out: Path) -> bool:
    """Remove `out` (a folder this run created) when nothing was written into it."""
    try:
        Path(out).rmdir()  # only succeeds on an empty folder
    except OSError:
        return False
    return True
