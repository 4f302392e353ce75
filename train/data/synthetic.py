"""make_synthetic: a built-in facial-expression set written in the real FER2013 and RAF-DB formats."""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DataError
from .faces import EXPRESSIONS, draw_face
from .samples import FER2013_CLASSES, RAFDB_CLASSES

VERSION = 1
MANIFEST = "synthetic.json"
_INCOMPLETE = ".synthetic-incomplete"
# expression name -> label index in each data set's own order
_FER_LABEL = {e: FER2013_CLASSES.index(e) for e in EXPRESSIONS}
_RAF_NAME = {"angry": "anger", "happy": "happiness", "sad": "sadness"}
_RAF_LABEL = {e: RAFDB_CLASSES.index(_RAF_NAME.get(e, e)) for e in EXPRESSIONS}


def _balanced(n: int, rng: np.random.Generator) -> list[str]:
    return [EXPRESSIONS[i] for i in rng.permutation(np.arange(n) % len(EXPRESSIONS))]


def _write_fer2013(folder: Path, seed: int, counts: dict[str, int]) -> None:
    lines = ["emotion,pixels,Usage"]
    for usage, n in counts.items():
        rng = np.random.default_rng([seed, 0, len(lines), n])
        for expression in _balanced(n, rng):
            gray = np.asarray(Image.fromarray(draw_face(expression, rng, 48)).convert("L"))
            lines.append(f"{_FER_LABEL[expression]},{' '.join(map(str, gray.ravel().tolist()))},{usage}")
    folder.mkdir(parents=True)
    (folder / "fer2013.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_rafdb(folder: Path, seed: int, counts: dict[str, int]) -> None:
    images = folder / "aligned"
    images.mkdir(parents=True)
    lines = []
    for split, n in counts.items():
        rng = np.random.default_rng([seed, 1, len(split), n])
        for i, expression in enumerate(_balanced(n, rng), start=1):
            stem = f"{split}_{i:05d}"
            buf = io.BytesIO()
            Image.fromarray(draw_face(expression, rng, 100)).save(buf, format="JPEG", quality=92)
            (images / f"{stem}_aligned.jpg").write_bytes(buf.getvalue())
            lines.append(f"{stem}.jpg {_RAF_LABEL[expression] + 1}")
    (folder / "list_patition_label.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _complete(root: Path, manifest: dict) -> bool:
    try:
        found = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if found != manifest:
        return False
    images = root / "rafdb" / "aligned"
    n_jpeg = sum(1 for _ in os.scandir(images)) if images.is_dir() else -1
    return (root / "fer2013" / "fer2013.csv").is_file() and n_jpeg == manifest["n_train"] + manifest["n_test"]


def make_synthetic(root: Path, *, seed: int = 113, n_train: int = 1800, n_test: int = 600, n_val: int = 600) -> Path:
    """Write (or reuse) the synthetic set under `root` and return `root`.

    root/fer2013/fer2013.csv: 48x48 gray, n_train Training + n_val PublicTest + n_test PrivateTest rows,
    FER2013 label order. root/rafdb/: flat RAF-DB layout, 100x100 RGB `aligned/<stem>_aligned.jpg` and
    `list_patition_label.txt` (n_train train + n_test test, labels 1..7 in RAF-DB order).
    Deterministic by seed; written to a temporary folder and moved in place; reused when
    root/synthetic.json records the same seed, counts and version.
    """
    if min(n_train, n_test, n_val) < 1:
        raise ValueError(f"n_train, n_test, n_val must be >= 1, got {n_train}, {n_test}, {n_val}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    manifest = {"version": VERSION, "seed": seed, "n_train": n_train, "n_val": n_val, "n_test": n_test}
    with open(root / ".synthetic.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _complete(root, manifest):
            return root
        ours = (root / MANIFEST).exists() or (root / _INCOMPLETE).exists()
        for sub in ("fer2013", "rafdb"):
            if (root / sub).exists() and not ours:
                raise DataError(f"{root / sub} exists and is not a synthetic set; refusing to overwrite it")
        tmp = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=root))
        try:
            _write_fer2013(tmp / "fer2013", seed, {"Training": n_train, "PublicTest": n_val, "PrivateTest": n_test})
            _write_rafdb(tmp / "rafdb", seed, {"train": n_train, "test": n_test})
            (root / _INCOMPLETE).touch()
            (root / MANIFEST).unlink(missing_ok=True)
            for sub in ("fer2013", "rafdb"):
                if (root / sub).exists():
                    shutil.rmtree(root / sub)
                os.replace(tmp / sub, root / sub)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
            os.replace(tmp / MANIFEST, root / MANIFEST)
            (root / _INCOMPLETE).unlink()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root
