"""make_synthetic: a built-in facial-expression set written in the real FER2013 and RAF-DB formats.

Two difficulties: "easy" (faces.draw_face; solved at ~95% in 4 CPU epochs) and "hard"
(faces_hard.draw_hard_face: head pose, light, occlusion, clutter) with a known rate of label noise:
LABEL_NOISE of the training labels (FER2013 Training and PublicTest, the validation split being part
of the labelled pool; RAF-DB train) are replaced by another class, test labels stay clean. Which rows
were changed, and their true labels, are recorded in label_noise.json beside the manifest.

Why written to disk rather than drawn in memory: the set is then read back by the same layout
detection and readers as real data (train.data.layouts' "synthetic" layout), drawn once and reused
by every run of a sweep, and can be inspected like any other copy.
"""

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
from .faces_hard import draw_hard_face
from .samples import FER2013_CLASSES, RAFDB_CLASSES

VERSION = 1
MANIFEST = "synthetic.json"
NOISE_RECORD = "label_noise.json"
DIFFICULTIES = ("easy", "hard")
LABEL_NOISE = 0.15
"""Fraction of the hard set's training (and validation) labels replaced by another class."""
_DRAW = {"easy": draw_face, "hard": draw_hard_face}
HARD_FACES_VERSION = 2
"""Bumped whenever draw_hard_face changes, so that a cached hard set is drawn again."""
_INCOMPLETE = ".synthetic-incomplete"
# expression name -> label index in each data set's own order
_FER_LABEL = {e: FER2013_CLASSES.index(e) for e in EXPRESSIONS}
_RAF_NAME = {"angry": "anger", "happy": "happiness", "sad": "sadness"}
_RAF_LABEL = {e: RAFDB_CLASSES.index(_RAF_NAME.get(e, e)) for e in EXPRESSIONS}


def _balanced(n: int, rng: np.random.Generator) -> list[str]:
    return [EXPRESSIONS[i] for i in rng.permutation(np.arange(n) % len(EXPRESSIONS))]


def noisy_labels(labels: list[int], rate: float, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """(labels with round(rate * n) of them replaced by another of the 7 classes, the changed positions)."""
    n_flip = int(round(rate * len(labels)))
    flipped = sorted(rng.permutation(len(labels))[:n_flip].tolist())
    out = list(labels)
    for i in flipped:
        out[i] = (out[i] + int(rng.integers(1, len(EXPRESSIONS)))) % len(EXPRESSIONS)
    return out, flipped


def _write_fer2013(folder: Path, seed: int, counts: dict[str, int], difficulty: str, noisy: set[str]) -> dict:
    lines = ["emotion,pixels,Usage"]
    record = {}
    for k, (usage, n) in enumerate(counts.items()):
        rng = np.random.default_rng([seed, 0, len(lines), n])
        rows = []
        expressions = _balanced(n, rng)
        for expression in expressions:
            gray = np.asarray(Image.fromarray(_DRAW[difficulty](expression, rng, 48)).convert("L"))
            rows.append(" ".join(map(str, gray.ravel().tolist())))
        labels = [_FER_LABEL[e] for e in expressions]
        if usage in noisy:
            given, flipped = noisy_labels(labels, LABEL_NOISE, np.random.default_rng([seed, 7, k]))
            record[usage] = {"rows": n, "changed": flipped, "true_labels": [labels[i] for i in flipped]}
            labels = given
        lines += [f"{label},{pixels},{usage}" for label, pixels in zip(labels, rows)]
    folder.mkdir(parents=True)
    (folder / "fer2013.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return record


def _write_rafdb(folder: Path, seed: int, counts: dict[str, int], difficulty: str, noisy: set[str]) -> dict:
    images = folder / "aligned"
    images.mkdir(parents=True)
    lines = []
    record = {}
    for k, (split, n) in enumerate(counts.items()):
        rng = np.random.default_rng([seed, 1, len(split), n])
        expressions = _balanced(n, rng)
        for i, expression in enumerate(expressions, start=1):
            buf = io.BytesIO()
            Image.fromarray(_DRAW[difficulty](expression, rng, 100)).save(buf, format="JPEG", quality=92)
            (images / f"{split}_{i:05d}_aligned.jpg").write_bytes(buf.getvalue())
        labels = [_RAF_LABEL[e] for e in expressions]
        if split in noisy:
            given, flipped = noisy_labels(labels, LABEL_NOISE, np.random.default_rng([seed, 8, k]))
            record[split] = {"rows": n, "changed": flipped, "true_labels": [labels[i] + 1 for i in flipped]}
            labels = given
        lines += [f"{split}_{i:05d}.jpg {label + 1}" for i, label in enumerate(labels, start=1)]
    (folder / "list_patition_label.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return record


def read_manifest(root: Path) -> dict | None:
    """The manifest of the built-in set under `root` (None when there is none or it cannot be read)."""
    try:
        found = json.loads((Path(root) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def describe_noise(manifest: dict) -> dict:
    """The run report's record of the set: difficulty and its label noise (rate, splits it applies to)."""
    noise = manifest.get("label_noise") or {"rate": 0.0, "splits": []}
    return {"builtin_set": manifest.get("difficulty", "easy"), "label_noise": noise}


def _complete(root: Path, manifest: dict) -> bool:
    if read_manifest(root) != manifest:
        return False
    images = root / "rafdb" / "aligned"
    n_jpeg = sum(1 for _ in os.scandir(images)) if images.is_dir() else -1
    return (root / "fer2013" / "fer2013.csv").is_file() and n_jpeg == manifest["n_train"] + manifest["n_test"]


def make_synthetic(
    root: Path,
    *,
    seed: int = 113,
    n_train: int = 1800,
    n_test: int = 600,
    n_val: int = 600,
    difficulty: str = "easy",
) -> Path:
    """Write (or reuse) the synthetic set under `root` and return `root`.

    root/fer2013/fer2013.csv: 48x48 gray, n_train Training + n_val PublicTest + n_test PrivateTest rows,
    FER2013 label order. root/rafdb/: flat RAF-DB layout, 100x100 RGB `aligned/<stem>_aligned.jpg` and
    `list_patition_label.txt` (n_train train + n_test test, labels 1..7 in RAF-DB order).
    `difficulty` "hard": the harder faces, with LABEL_NOISE of the Training/PublicTest (RAF-DB train)
    labels changed (root/label_noise.json says which). Deterministic by seed; written to a temporary
    folder and moved in place; reused when root/synthetic.json records the same seed, counts, difficulty
    and version.
    """
    if min(n_train, n_test, n_val) < 1:
        raise ValueError(f"n_train, n_test, n_val must be >= 1, got {n_train}, {n_test}, {n_val}")
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    manifest = {"version": VERSION, "seed": seed, "n_train": n_train, "n_val": n_val, "n_test": n_test}
    noisy = {"Training", "PublicTest", "train"} if difficulty == "hard" else set()
    if difficulty != "easy":  # the easy set's manifest keeps its first form: caches stay valid
        manifest["difficulty"] = difficulty
        manifest["faces_version"] = HARD_FACES_VERSION
        manifest["label_noise"] = {
            "rate": LABEL_NOISE,
            "splits": ["fer2013 Training", "fer2013 PublicTest", "rafdb train"],
        }
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
            counts = {"Training": n_train, "PublicTest": n_val, "PrivateTest": n_test}
            record = {"fer2013": _write_fer2013(tmp / "fer2013", seed, counts, difficulty, noisy)}
            record["rafdb"] = _write_rafdb(tmp / "rafdb", seed, {"train": n_train, "test": n_test}, difficulty, noisy)
            (root / _INCOMPLETE).touch()
            (root / MANIFEST).unlink(missing_ok=True)
            (root / NOISE_RECORD).unlink(missing_ok=True)
            if noisy:
                (root / NOISE_RECORD).write_text(json.dumps(record) + "\n", encoding="utf-8")
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
