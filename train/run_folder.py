"""The run folder (--out): checked before anything is written, never silently overwritten, left tidy.

- A path that is a file, sits under a file, or cannot be written is refused in one line.
- A folder that already holds a run's results is refused unless the run resumes it or --overwrite says so.
- A run owns its folder: it holds the folder's lock (ddakern.folder_lock, released by the kernel when the
  process ends, so a crashed run leaves nothing stuck); a second run on the same folder is refused.
- Temporaries of an interrupted atomic save (`.best.pt.*.tmp`) are removed at start.
- A folder this run created and left empty (it failed before writing anything) is removed again.
- Results get the user's umask (mkstemp creates 0600 files): ddakern.atomic writes them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ddakern.folder_lock import FolderBusy, lock_folder, release

RESULTS = ("last.pt", "best.pt", "summary.json", "metrics.jsonl")
"""Files whose presence means the folder holds (part of) a run."""


class RunFolderError(ValueError):
    """A --out that cannot be used; one line naming the path."""


def _first_file_above(path: Path) -> Path | None:
    for parent in [path, *path.parents]:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def prepare_out(out: Path, *, flag: str = "--out") -> bool:
    """Create `out` if needed after checking it can be a folder and can be written; True when created."""
    out = Path(out)
    blocker = _first_file_above(out)
    if blocker == out:
        raise RunFolderError(f"{flag} {out}: is a file, not a folder")
    if blocker is not None:
        raise RunFolderError(f"{flag} {out}: {blocker} is a file, so no folder can be made under it")
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


def check_holds_no_run(out: Path, *, flag: str = "--out", resuming: bool = False, overwrite: bool = False) -> None:
    """Refuse a folder that holds (part of) a run, unless this run resumes it or --overwrite says so."""
    if resuming or overwrite:
        return
    held = [name for name in RESULTS if (Path(out) / name).exists()]
    if held:
        raise RunFolderError(
            f"{flag} {out} already holds a run ({', '.join(held)}); continue it with --resume auto, "
            "choose a new folder, or pass --overwrite to replace it"
        )


def claim(
    out: Path, *, flag: str = "--out", resuming: bool = False, overwrite: bool = False
) -> tuple[bool, int | None]:
    """Make `out` ready for a run and take its lock before looking at what it holds: (whether this call
    created `out`, the lock's descriptor to keep until the run ends; None where the filesystem has no
    locks). A folder another run holds is refused and left alone (even one this call saw created)."""
    created = prepare_out(out, flag=flag)
    try:
        fd = lock_folder(out)
    except FolderBusy:
        raise RunFolderError(
            f"{flag} {out} is in use by another run; wait for it to finish or choose another folder"
        ) from None
    try:
        check_holds_no_run(out, flag=flag, resuming=resuming, overwrite=overwrite)
    except RunFolderError:
        release(fd)
        raise
    return created, fd


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
