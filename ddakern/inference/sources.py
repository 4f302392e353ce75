"""What `predict` reads: image files, folders (recursively), video files and webcam indices."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}


@dataclass(frozen=True)
class Source:
    """One input: kind "image", "video" or "webcam"; `name` is what the results call it."""

    kind: str
    path: Path | None
    name: str
    webcam: int = -1


def _from_folder(folder: Path) -> list[Source]:
    found = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            kind = (
                "video" if p.suffix.lower() in VIDEO_SUFFIXES else "image" if p.suffix.lower() in IMAGE_SUFFIXES else ""
            )
            if kind:
                found.append(Source(kind, p, str(p)))
    return found


def collect(inputs: list[str]) -> tuple[list[Source], list[str]]:
    """The sources named by `inputs` and one problem line per input that names nothing usable.

    A folder contributes its image and video files (recursively, sorted, by suffix); a file counts
    as a video by its suffix and as an image otherwise (it is then decoded, and reported if it is
    not an image); a bare integer that is not a path is a webcam index.
    """
    sources: list[Source] = []
    problems: list[str] = []
    for text in inputs:
        p = Path(text)
        if p.is_dir():
            found = _from_folder(p)
            sources += found
            if not found:
                problems.append(f"{p}: folder holds no image or video files")
        elif p.is_file():
            sources.append(Source("video" if p.suffix.lower() in VIDEO_SUFFIXES else "image", p, str(p)))
        elif text.isdigit():
            sources.append(Source("webcam", None, f"webcam:{text}", webcam=int(text)))
        else:
            problems.append(f"{p}: no such file or folder")
    return sources, problems
