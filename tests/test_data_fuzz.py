"""Fuzz the data-set readers: random byte flips, insertions and truncations of a valid FER2013 CSV and a RAF-DB tree.

Each damaged copy either loads (well-formed splits) or fails with one DataError line naming a file under
the data folder, with and without skip_bad; any other exception fails the test. Seeded; a few seconds.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from layout_files import read_family
from PIL import Image

from train.data import DataError

SEED = 20261202
CASES = 300


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DDAKERN_CACHE", str(tmp_path / "cache"))


INSERTS = ("²".encode(), b"--", b"\t", "\ufeff".encode(), b"\xff\xd9", b"\n", b'"', "é".encode("latin-1"))


def damage(data: bytes, rng: np.random.Generator) -> bytes:
    """A truncation (1 in 3), an inserted troublemaker (1 in 6: '²', '--', a tab, a BOM, an end-of-image
    marker, a newline, a quote, a Latin-1 byte) or 1-8 random bytes set to random values."""
    r = rng.random()
    if r < 1 / 3:
        return data[: int(rng.integers(0, len(data)))]
    if r < 1 / 2:
        i = int(rng.integers(0, len(data) + 1))
        return data[:i] + INSERTS[int(rng.integers(0, len(INSERTS)))] + data[i:]
    out = bytearray(data)
    specials = b'\n\r\t ,"-\xef\xbb\xbf\xff\xd8\xd9\x00\xe9\xb2'
    for _ in range(int(rng.integers(1, 9))):
        i = int(rng.integers(0, len(out)))
        out[i] = specials[int(rng.integers(0, len(specials)))] if rng.random() < 0.5 else int(rng.integers(0, 256))
    return bytes(out)


def check_outcome(dataset: str, root: Path, skip_bad: bool) -> str:
    """'ok' or 'error'; asserts the shape of either outcome."""
    try:
        splits = read_family(dataset, root, skip_bad=skip_bad)
    except DataError as e:
        message = str(e)
        assert message and "\n" not in message and "Traceback" not in message, message
        assert str(root) in message, message  # names a file of the data set
        return "error"
    for split in splits.values():
        assert len(split) > 0 and split.labels.dtype == np.int64
        assert 0 <= split.labels.min() and split.labels.max() < split.num_classes
        if split.kind == "array":
            assert split.images.dtype == np.uint8 and split.images.shape[1:] == (48, 48)
    return "ok"


def valid_fer_csv(rng: np.random.Generator) -> bytes:
    rows = ["emotion,pixels,Usage"]
    for i, usage in enumerate(["Training"] * 3 + ["PublicTest", "PrivateTest"]):
        pixels = " ".join(map(str, rng.integers(0, 256, 2304).tolist()))
        rows.append(f"{i % 7},{pixels},{usage}")
    return ("\n".join(rows) + "\n").encode()


def test_fer2013_csv_fuzz(tmp_path: Path) -> None:
    rng = np.random.default_rng(SEED)
    good = valid_fer_csv(rng)
    root = tmp_path / "fer"
    root.mkdir()
    outcomes = {"ok": 0, "error": 0}
    for _ in range(CASES):
        (root / "fer2013.csv").write_bytes(damage(good, rng))
        for skip_bad in (False, True):
            outcomes[check_outcome("fer2013", root, skip_bad)] += 1
    assert outcomes["ok"] > 0 and outcomes["error"] > 0, outcomes  # both outcomes were exercised


RAF_LINES = ["train_00001.jpg 1", "train_00002.jpg 4", "train_00003.jpg 7", "test_00001.jpg 2", "test_00002.jpg 6"]


LABELS = "list_patition_label.txt"


def valid_raf_tree(rng: np.random.Generator) -> dict[str, bytes]:
    """{relative path: bytes} of a small flat RAF-DB copy (label file + 16x16 JPEGs)."""
    files = {LABELS: ("\n".join(RAF_LINES) + "\n").encode()}
    for line in RAF_LINES:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
        files[f"aligned/{Path(line.split()[0]).stem}_aligned.jpg"] = buf.getvalue()
    return files


def test_rafdb_tree_fuzz(tmp_path: Path) -> None:
    rng = np.random.default_rng(SEED + 1)
    good = valid_raf_tree(rng)
    names = sorted(good)
    outcomes = {"ok": 0, "error": 0}
    for case in range(CASES):
        root = tmp_path / f"raf{case}"  # a fresh folder per case: no verdict cached for a damaged file
        (root / "aligned").mkdir(parents=True)
        # the label file half the time, else one of the images
        damaged = LABELS if rng.random() < 0.5 else names[int(rng.integers(0, len(names)))]
        for name, data in good.items():
            (root / name).write_bytes(damage(data, rng) if name == damaged else data)
        for skip_bad in (False, True):
            outcomes[check_outcome("rafdb", root, skip_bad)] += 1
    assert outcomes["ok"] > 0 and outcomes["error"] > 0, outcomes
