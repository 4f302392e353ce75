"""Decode every image of a data set once, before training, and remember the verdict.

A JPEG whose markers are intact but whose entropy-coded data is damaged passes a header check, then
crashes the input pipeline mid-epoch (DALI's decoder or a DataLoader worker) or, worse, decodes to
garbage with only a warning on stderr. So each file is decoded in full with libjpeg-turbo in strict
mode (`simplejpeg`, where "Corrupt JPEG data" warnings are errors); other formats with PIL. Verdicts
are cached per image folder under $DDAKERN_CACHE (default ~/.cache/ddakern), keyed by file size,
modification time and inode, so only new or changed files are decoded again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

log = logging.getLogger("train.data")

CACHE_VERSION = 2
JPEG_START = b"\xff\xd8\xff"


def _decoder() -> str:
    try:
        import simplejpeg
    except ImportError:  # optional: PIL's full decode still catches fatal errors (not warnings)
        return "pil"
    return f"simplejpeg {simplejpeg.__version__} strict"


def strict_jpeg_problem(data: bytes, *, eighth_scale: bool = False) -> str | None:
    """None when JPEG `data` decodes in libjpeg-turbo's strict mode (warnings are errors), else why; None
    too when the data is no JPEG or simplejpeg is not installed (nothing checked). `eighth_scale` decodes
    at 1/8 size: every coefficient is still entropy-decoded, where damage shows, for about 0.6x the time."""
    if data[:3] != JPEG_START:
        return None
    try:
        import simplejpeg
    except ImportError:
        return None
    scale = {"min_height": 1, "min_width": 1} if eighth_scale else {}
    try:
        simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True, **scale)
    except Exception as e:  # ValueError, RuntimeError, ... on corrupt data
        return _corrupt(e)
    return None


def _corrupt(e: Exception) -> str:
    return f"corrupt image ({' '.join(str(e).split()) or type(e).__name__})"


def decode_problem(data: bytes) -> str | None:
    """None when `data` decodes completely and cleanly, else the decoder's reason (one line)."""
    if data[:3] == JPEG_START and _decoder() != "pil":
        return strict_jpeg_problem(data)
    try:
        import io

        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception as e:  # decoders raise ValueError, OSError, SyntaxError, ... on corrupt data
        return _corrupt(e)
    return None


def file_problem(path: Path) -> str | None:
    """None when the image at `path` decodes cleanly, else the problem."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return f"cannot read ({e.strerror or e})"
    if not data:
        return "empty file"
    return decode_problem(data)


def cache_root() -> Path:
    """$DDAKERN_CACHE, else ~/.cache/ddakern."""
    env = os.environ.get("DDAKERN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "ddakern"


def _cache_file(folder: Path) -> Path:
    key = hashlib.sha256(str(folder.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return cache_root() / "image-checks" / f"{key}.json"


def _load_cache(path: Path, folder: Path, decoder: str) -> dict[str, list]:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    ok = isinstance(found, dict) and found.get("version") == CACHE_VERSION and found.get("decoder") == decoder
    if not ok or found.get("folder") != str(folder.resolve()) or not isinstance(found.get("files"), dict):
        return {}
    return found["files"]


def _save_cache(path: Path, folder: Path, decoder: str, files: dict[str, list]) -> None:
    record = {"version": CACHE_VERSION, "decoder": decoder, "folder": str(folder.resolve()), "files": files}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(record, fh)
        os.replace(tmp, path)
    except OSError as e:  # a cache that cannot be written only costs time next run
        log.debug(f"image check cache {path} not written: {e}")


def _check_folder(
    folder: Path, paths: list[Path], check: Callable[[Path], str | None], decoder: str, use_cache: bool
) -> dict[Path, str]:
    cache_path = _cache_file(folder)
    cached = _load_cache(cache_path, folder, decoder) if use_cache else {}
    files: dict[str, list] = {}
    problems: dict[Path, str] = {}
    decoded = 0
    for p in paths:
        try:
            st = p.stat()
            stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        except OSError as e:
            problems[p] = f"cannot read ({e.strerror or e})"
            continue
        entry = cached.get(p.name)
        if entry is not None and entry[:3] == stamp:
            problem = entry[3]
        else:
            problem = check(p)
            decoded += 1
        files[p.name] = stamp + [problem]
        if problem is not None:
            problems[p] = problem
    if use_cache and decoded:
        _save_cache(cache_path, folder, decoder, {**cached, **files})
    return problems


def check_images(
    paths: Sequence[Path], *, check: Callable[[Path], str | None] = file_problem, use_cache: bool = True
) -> dict[Path, str]:
    """{path: problem} for every image of `paths` that `check` finds bad (default: does not decode cleanly).

    Verdicts are cached per folder and per check function; only new or changed files are checked again.
    """
    decoder = f"{_decoder()} {check.__module__}.{check.__qualname__}"
    by_folder: dict[Path, list[Path]] = {}
    for p in paths:
        p = Path(p)
        by_folder.setdefault(p.parent, []).append(p)
    problems: dict[Path, str] = {}
    for folder, group in by_folder.items():
        problems.update(_check_folder(folder, group, check, decoder, use_cache))
    return problems
