"""Damaged data sets through the real CLI (train.run's `main`, in-process, files really written).

Each bad input ends with exit code 1 and one stderr line naming the file and line; with --skip-bad the
run trains on the rest, and summary.json counts what was skipped. Corrupt JPEGs are made by damaging the
entropy-coded data (after the start-of-scan header), so their markers stay intact.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from inprocess import run_main
from PIL import Image

from train import run
from train.data import dali_available
from train.data.errors import DataError
from train.data.layouts import load_layout

TINY = [
    "--model", "resnet18", "--image-size", "32", "--batch-size", "4", "--epochs", "1", "--no-tta",
    "--augment", "none", "--num-workers", "0", "--no-progress", "--device", "cpu", "--threads", "1",
]  # fmt: skip
LOADERS = ["torch", pytest.param("dali", marks=pytest.mark.skipif(not dali_available(), reason="no DALI"))]


def cli(args: list[str], tmp_path: Path, capfd) -> tuple[int, str, list[str]]:
    """(exit code, stdout, stderr lines) of train.run's main(args), as `python -m train.run args` gives
    them (tests/inprocess.py: no interpreter and torch start-up per case), with its own image-check cache."""
    code, out, err = run_main(run.main, args, capfd, env={"DDAKERN_CACHE": str(tmp_path / "cache")})
    return code, out, [ln for ln in err.splitlines() if ln.strip()]


def one_error_line(rc: int, err: list[str], *needles: str) -> str:
    assert rc == 1, err
    assert len(err) == 1, err
    assert err[0].startswith("error: "), err
    for needle in needles:
        assert needle in err[0], err
    return err[0]


# ---------------------------------------------------------------- FER2013


def pixels(rng: np.random.Generator, sep: str = " ") -> str:
    return sep.join(map(str, rng.integers(0, 256, 2304).tolist()))


def write_fer(root: Path, extra: list[bytes], bom: bool = False) -> Path:
    """8 Training + 2 PublicTest + 2 PrivateTest good rows, then the `extra` raw lines (as Training)."""
    rng = np.random.default_rng(3)
    usages = ["Training"] * 8 + ["PublicTest"] * 2 + ["PrivateTest"] * 2
    lines = [b"emotion,pixels,Usage"] + [f"{i % 7},{pixels(rng)},{u}".encode() for i, u in enumerate(usages)]
    root.mkdir(parents=True, exist_ok=True)
    path = root / "fer2013.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines + extra) + b"\n")
    return path


def fer_args(root: Path, out: Path) -> list[str]:
    return ["--recipe", "fer2013", "--data-root", str(root), "--out", str(out), "--loader", "torch", *TINY]


P = " ".join(["7"] * 2304)
BAD_FER_ROWS = {
    "double-minus label": (f"--1,{P},Training".encode(), "emotion '--1' is not an integer"),
    "superscript label": (f"²,{P},Training".encode(), "emotion '²' is not an integer"),
    "tab-separated pixels": (f"1,{P.replace(' ', chr(9))},Training".encode(), "pixels separated by '\\t'"),
    "latin-1 line": (f"1,{P},Tr\xe9ining".encode("latin-1"), "not UTF-8 text (byte 0xe9"),
}


def test_fer2013_bad_row_is_one_line(tmp_path: Path, capfd) -> None:
    row, problem = BAD_FER_ROWS["double-minus label"]
    csv = write_fer(tmp_path / "fer", [row])
    rc, _, err = cli(fer_args(tmp_path / "fer", tmp_path / "run"), tmp_path, capfd)
    one_error_line(rc, err, f"{csv} line 14: ", problem)


@pytest.mark.parametrize("case", list(BAD_FER_ROWS))
def test_fer2013_bad_row_names_file_line_and_problem(tmp_path: Path, case: str) -> None:
    """Every kind of bad row, read in-process (the CLI's one-line path is the test above)."""
    row, problem = BAD_FER_ROWS[case]
    csv = write_fer(tmp_path / "fer", [row])
    with pytest.raises(DataError) as info:
        load_layout(tmp_path / "fer")
    assert f"{csv} line 14: " in str(info.value) and problem in str(info.value)


def test_fer2013_skip_bad_skips_every_kind_and_accepts_a_bom(tmp_path: Path, capfd) -> None:
    write_fer(tmp_path / "fer", [row for row, _ in BAD_FER_ROWS.values()], bom=True)
    out = tmp_path / "run"
    rc, _, err = cli([*fer_args(tmp_path / "fer", out), "--skip-bad"], tmp_path, capfd)
    assert rc == 0, err
    assert any("skipped 4 malformed row(s)" in line for line in err), err
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["skipped_samples"]["train"] == 4 and summary["samples"]["train"] == 8


# ---------------------------------------------------------------- RAF-DB


def jpeg(rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def corrupt_entropy_data(data: bytes) -> bytes:
    """Zero 40 bytes in the middle of the entropy-coded segment: SOI, SOS and EOI markers stay intact."""
    sos = data.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    middle = (start + len(data) - 2) // 2
    out = data[:middle] + b"\x00" * 40 + data[middle + 40 :]
    assert out[:3] == b"\xff\xd8\xff" and out.endswith(b"\xff\xd9") and b"\xff\xda" in out
    return out


def write_raf(root: Path, extra: list[bytes] = (), bom: bool = False) -> Path:
    """Flat RAF-DB copy: 8 train + 3 test images, labels 1..7; `extra` raw lines appended."""
    rng = np.random.default_rng(5)
    (root / "aligned").mkdir(parents=True, exist_ok=True)
    lines = []
    for split, n in (("train", 8), ("test", 3)):
        for i in range(1, n + 1):
            (root / "aligned" / f"{split}_{i:05d}_aligned.jpg").write_bytes(jpeg(rng))
            lines.append(f"{split}_{i:05d}.jpg {i % 7 + 1}".encode())
    path = root / "list_patition_label.txt"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines + list(extra)) + b"\n")
    return path


def raf_args(root: Path, out: Path, loader: str) -> list[str]:
    # --holdout 0: every train image trains (the counts below), selection on test (the community protocol)
    return [
        "--recipe",
        "rafdb",
        "--data-root",
        str(root),
        "--out",
        str(out),
        "--loader",
        loader,
        "--holdout",
        "0",
        *TINY,
    ]


@pytest.mark.parametrize("loader", LOADERS)
def test_rafdb_corrupt_jpeg_named_before_training(tmp_path: Path, loader: str, capfd) -> None:
    labels = write_raf(tmp_path / "raf")
    bad = tmp_path / "raf" / "aligned" / "train_00003_aligned.jpg"
    bad.write_bytes(corrupt_entropy_data(bad.read_bytes()))
    rc, _, err = cli(raf_args(tmp_path / "raf", tmp_path / "run", loader), tmp_path, capfd)
    one_error_line(rc, err, f"{labels} line 3: image {bad}: corrupt image (Corrupt JPEG data")
    assert not (tmp_path / "run" / "last.pt").exists()


BAD_RAF_LINES = [
    (b"train_00002.jpg \xc2\xb2", "label '\u00b2' is not an integer"),
    (b"train_00002.jpg --1", "label '--1' is not an integer"),
    (b"train_0000\xe9.jpg 1", "not UTF-8 text (byte 0xe9 at column 11)"),
    (b"train_00002.jpg 5", "train_00002.jpg labelled 5 here but 3 on line 2 (conflicting duplicate)"),
]


@pytest.mark.parametrize("line, problem", BAD_RAF_LINES)
def test_rafdb_bad_label_line_names_file_line_and_problem(tmp_path: Path, line: bytes, problem: str) -> None:
    """Every kind of bad label line, read in-process (the CLI's one-line path is the test below)."""
    labels = write_raf(tmp_path / "raf", [line])
    with pytest.raises(DataError) as info:
        load_layout(tmp_path / "raf", holdout=0)
    assert f"{labels} line 12: " in str(info.value) and problem in str(info.value)


def test_rafdb_bad_label_line_is_one_line(tmp_path: Path, capfd) -> None:
    line, problem = BAD_RAF_LINES[1]
    labels = write_raf(tmp_path / "raf", [line])
    rc, _, err = cli(raf_args(tmp_path / "raf", tmp_path / "run", "torch"), tmp_path, capfd)
    one_error_line(rc, err, f"{labels} line 12: ", problem)


@pytest.mark.parametrize("loader", LOADERS)
def test_rafdb_skip_bad_skips_corrupt_jpeg_and_bad_lines(tmp_path: Path, loader: str, capfd) -> None:
    extra = [b"train_00002.jpg \xc2\xb2", b"train_00004.jpg 5", b"train_00004.jpg 5"]  # bad, duplicate x2
    write_raf(tmp_path / "raf", extra, bom=True)
    bad = tmp_path / "raf" / "aligned" / "train_00003_aligned.jpg"
    bad.write_bytes(corrupt_entropy_data(bad.read_bytes()))
    out = tmp_path / "run"
    rc, _, err = cli([*raf_args(tmp_path / "raf", out, loader), "--skip-bad"], tmp_path, capfd)
    assert rc == 0, err
    assert any("ignored 2 duplicate line(s)" in line for line in err), err
    assert any("skipped 2 malformed sample(s)" in line for line in err), err
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["skipped_samples"]["train"] == 2 and summary["samples"]["train"] == 7
    assert not any(line.startswith("Corrupt JPEG data") for line in err), err  # libjpeg never saw it


# ---------------------------------------------------------------- the loaders' own guard


def undecodable_jpeg(data: bytes) -> bytes:
    """Point the first component of SOF0 at quantisation table 7, which is never defined: every decoder
    (DALI's, PIL's) fails on it while the markers stay in place."""
    sof = data.index(b"\xff\xc0")
    tq = sof + 2 + 2 + 1 + 2 + 2 + 1 + 2  # length, precision, height, width, count, then id + sampling
    return data[:tq] + b"\x07" + data[tq + 1 :]


def six_files_one_undecodable(folder: Path, bad: int):
    """Six JPEG files (classes 0-5), file `bad` made undecodable after the reader would have checked it: the
    SampleSet and the paths."""
    from train.data import SampleSet

    rng = np.random.default_rng(bad)
    files = []
    for i in range(6):
        files.append(folder / f"{i}.jpg")
        files[-1].write_bytes(jpeg(rng))
    files[bad].write_bytes(undecodable_jpeg(files[bad].read_bytes()))
    return SampleSet("files", None, files, np.arange(6) % 7, tuple("abcdefg")), files


def test_torch_workers_stop_with_the_error_and_a_later_pass_starts_new_ones(tmp_path: Path) -> None:
    """The persistent worker processes end when a pass fails, not at a later garbage collection: there,
    DataLoader's shutdown found its queues already taken apart and waited 5 s per worker (10 s stalls in
    whatever ran next). Before the DALI cases below: worker processes forked after a
    DALI pipeline has run in this process can hang (one loader kind per process in a run)."""
    import multiprocessing

    from train.data import build_loader

    samples, _ = six_files_one_undecodable(tmp_path, bad=3)
    loader = build_loader(samples, train=True, batch_size=2, image_size=32, augment=None, loader="torch", num_threads=2)
    for _ in range(2):  # the second pass starts new workers and fails the same way
        with pytest.raises(DataError, match="3.jpg"):
            for _ in loader:
                pass
        assert multiprocessing.active_children() == []


@pytest.mark.parametrize(
    "loader, train, workers",
    [("torch", True, 2), ("torch", False, 0)]
    + [pytest.param("dali", t, 2, marks=LOADERS[1].marks) for t in (True, False)],
)
def test_loader_names_an_undecodable_file_in_one_line(tmp_path: Path, loader: str, train: bool, workers: int) -> None:
    """Files that change after the reader checked them: the loader ends the pass with one DataError line."""
    from train.data import DataError, build_loader

    samples, files = six_files_one_undecodable(tmp_path, bad=4)
    kw = dict(train=train, batch_size=2, image_size=32, augment=None, loader=loader, num_threads=workers)
    with pytest.raises(DataError) as info:
        for _ in build_loader(samples, **kw):
            pass
    assert str(files[4]) in str(info.value) and "\n" not in str(info.value), str(info.value)
