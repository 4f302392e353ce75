"""A file that goes bad after the start-up check (same size, time stamp and inode, so the check's cache
still vouches for it), met mid-run by the real loaders: --skip-bad skips and counts it (log and
summary.json), without it the run stops with one line naming it. And the batch rules: training batches
keep their size (stand-ins), evaluation batches drop the bad file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from test_errors_data import undecodable_jpeg, write_raf

from train.data import SampleSet, build_loader, dali_available
from train.data.layouts import load_layout
from train.run import main

LOADERS = ["torch", pytest.param("dali", marks=pytest.mark.skipif(not dali_available(), reason="no DALI"))]
TINY = [
    "--model", "resnet18", "--image-size", "32", "--batch-size", "4", "--epochs", "1", "--no-tta",
    "--workers", "0", "--dali-threads", "1", "--no-progress", "--device", "cpu", "--augment", "none",
    "--holdout", "0", "--no-memory-estimate",
]  # fmt: skip


def damage_after_check(path: Path) -> None:
    """Make `path` undecodable in place, keeping its size, modification time and inode."""
    st = path.stat()
    data = undecodable_jpeg(path.read_bytes())
    with open(path, "r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_ino == st.st_ino


@pytest.fixture
def raf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(data root, the training image damaged after the start-up check cached it as good)."""
    monkeypatch.setenv("DDAKERN_CACHE", str(tmp_path / "cache"))
    write_raf(tmp_path / "raf")
    load_layout(tmp_path / "raf", family="rafdb", holdout=0)  # the start-up check: every image decodes
    bad = tmp_path / "raf" / "aligned" / "train_00003_aligned.jpg"
    damage_after_check(bad)
    load_layout(tmp_path / "raf", family="rafdb", holdout=0)  # the cache still says it is fine
    return tmp_path / "raf", bad


@pytest.mark.parametrize("loader", LOADERS)
def test_skip_bad_counts_a_file_that_went_bad(raf, tmp_path: Path, loader: str, capsys) -> None:
    root, bad = raf
    out = tmp_path / "run"
    assert main([*TINY, "--recipe", "rafdb", "--data-root", str(root), "--out", str(out), "--loader", loader,
                 "--skip-bad"]) == 0  # fmt: skip
    skipped = json.loads((out / "summary.json").read_text(encoding="utf-8"))["data"]["skipped_during_training"]
    assert skipped["count"] == 1 and skipped["occurrences"] == 1, skipped
    assert skipped["first"][0]["path"] == str(bad) and "corrupt image" in skipped["first"][0]["problem"]
    err = capsys.readouterr().err
    assert f"epoch 1: --skip-bad: 1 bad file(s) skipped so far (1 sample(s)): {bad}: corrupt image" in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("loader", LOADERS)
def test_without_skip_bad_the_run_stops_naming_it(raf, tmp_path: Path, loader: str, capsys) -> None:
    root, bad = raf
    argv = [*TINY, "--recipe", "rafdb", "--data-root", str(root), "--out", str(tmp_path / "run"), "--loader", loader]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {bad}: ") and "Traceback" not in "\n".join(err), err


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("workers", [0, 2])
def test_training_batches_keep_their_size_evaluation_drops(tmp_path: Path, loader: str, workers: int) -> None:
    if loader == "dali" and workers == 2:
        pytest.skip("DALI threads do not change the source's rules")
    from test_errors_data import jpeg

    rng = np.random.default_rng(3)
    files = []
    for i in range(8):
        files.append(tmp_path / f"{i}.jpg")
        files[-1].write_bytes(jpeg(rng))
    for i in (2, 3):  # the whole first evaluation batch, and two of the first training batch or more
        files[i].write_bytes(undecodable_jpeg(files[i].read_bytes()))
    samples = SampleSet("files", None, files, np.arange(8) % 7, tuple("abcdefg"))
    kw = dict(batch_size=2, image_size=32, augment=None, loader=loader, num_threads=workers, skip_bad=True)
    train = build_loader(samples, train=True, **kw)
    sizes = [y.shape[0] for _, y in train]
    assert sizes == [2, 2, 2, 2] and train.skips.count == 2 and train.skips.occurrences == 2
    test = build_loader(samples, train=False, **kw)
    labels = np.concatenate([y.numpy() for _, y in test])
    assert labels.tolist() == [0, 1, 4, 5, 6, 0] and len(test.skips.files) == 2  # files 2 and 3 left out
    assert list(test.skips.files) == [str(files[2]), str(files[3])]


@pytest.mark.parametrize("loader", LOADERS)
def test_a_file_that_goes_bad_between_epochs_is_skipped_then(tmp_path: Path, loader: str) -> None:
    """Checked strictly when first read, then again only once its size or time stamp changes."""
    from test_errors_data import jpeg

    rng = np.random.default_rng(4)
    files = [tmp_path / f"{i}.jpg" for i in range(6)]
    for f in files:
        f.write_bytes(jpeg(rng))
    samples = SampleSet("files", None, files, np.arange(6) % 7, tuple("abcdefg"))
    kw = dict(batch_size=3, image_size=32, augment=None, loader=loader, num_threads=1, skip_bad=True)
    train = build_loader(samples, train=True, **kw)
    assert sum(y.shape[0] for _, y in train) == 6 and train.skips.count == 0
    files[1].write_bytes(files[1].read_bytes()[:200])  # truncated by a copy in progress
    train.set_epoch(1)
    assert sum(y.shape[0] for _, y in train) == 6 and list(train.skips.files) == [str(files[1])]
    assert "truncated JPEG" in train.skips.files[str(files[1])]
    files[1].unlink()  # deleted
    train.set_epoch(2)
    assert sum(y.shape[0] for _, y in train) == 6 and train.skips.count == 1 and train.skips.occurrences == 2
