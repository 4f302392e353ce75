"""train.run never loses work: a run owns its --out (a second one is refused), a full disk stops it in one
line with the earlier checkpoints intact, a run resumes from any working directory, and a packed data set
is refused in one line."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from ddakern import atomic
from ddakern.folder_lock import lock_folder, release
from train import checkpoint, report
from train.data.synthetic import make_synthetic
from train.run import configure, main

# 24 / 12 = 2 steps per epoch
TINY = [
    "--model", "resnet18", "--image-size", "32", "--batch-size", "12", "--optimizer", "adam", "--no-tta",
    "--loader", "torch", "--num-workers", "0", "--no-progress", "--device", "cpu", "--no-memory-estimate",
]  # fmt: skip
HOLD = "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()"  # noqa: E501


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:") or "Traceback" in line]


def test_a_folder_another_run_holds_is_refused_and_a_killed_holder_frees_it(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"held\n"
        tiny = ["--synthetic-train", "24", "--synthetic-val", "7", "--synthetic-test", "7", "--epochs", "1"]
        assert main([*TINY, *tiny, "--data-root", str(tmp_path / "data"), "--out", str(out)]) == 2
        assert error_lines(capsys.readouterr().err) == [
            f"error: --out {out} is in use by another run; wait for it to finish or choose another folder"
        ]
        assert out.is_dir()  # the other run's folder is left alone
    finally:
        holder.kill()  # a crash: the kernel drops its lock, nothing stays stuck
        holder.wait()
    fd = lock_folder(out)
    assert fd is not None
    release(fd)


def test_a_claimed_folder_is_refused_to_a_second_claim_until_released(tmp_path: Path) -> None:
    """flock belongs to one open of the folder: a second claim is refused even within one process."""
    from train.run_folder import RunFolderError, claim

    created, fd = claim(tmp_path / "r")
    try:
        assert created and fd is not None
        with pytest.raises(RunFolderError, match="is in use by another run"):
            claim(tmp_path / "r")
    finally:
        release(fd)
    assert claim(tmp_path / "r", resuming=True)[1] is not None


class FullDisk:
    """A file whose device fills up after `room` bytes: the write that overflows raises ENOSPC."""

    def __init__(self, fh, room: int) -> None:
        self.fh, self.room = fh, room

    def write(self, data) -> int:
        n = min(len(data), self.room)
        self.fh.write(bytes(data[:n]))
        self.room -= n
        if n < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return n

    def __getattr__(self, name: str):
        return getattr(self.fh, name)

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc) -> None:
        self.fh.close()


@pytest.mark.parametrize(
    "name, write",
    [
        ("last.pt", lambda p: atomic.torch_save({"w": torch.randn(64, 64)}, p)),
        ("metrics.jsonl", lambda p: report.write_metrics(p, [{"epoch": e, "val_acc": 50.0} for e in range(200)])),
        ("summary.json", lambda p: report.write_json(p, {"per_class": list(range(2000))})),
    ],
)
def test_a_full_disk_names_the_file_and_leaves_the_old_one(tmp_path: Path, monkeypatch, name: str, write) -> None:
    path = tmp_path / name
    path.write_bytes(b"the previous file")
    real_open_temp = atomic.open_temp

    def open_temp_on_a_full_disk(target, suffix=".tmp", **text):
        fh, tmp = real_open_temp(target, suffix, **text)
        return FullDisk(fh, room=1000), tmp

    monkeypatch.setattr(atomic, "open_temp", open_temp_on_a_full_disk)
    with pytest.raises(atomic.WriteError) as e:
        write(path)
    assert str(e.value) == f"cannot write {path}: no space left on device" and e.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"the previous file" and os.listdir(tmp_path) == [name]


def test_full_disk_stops_in_one_line_keeps_the_checkpoints_and_resumes_from_elsewhere(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    make_synthetic(tmp_path / "a" / "data", n_train=24, n_val=7, n_test=7)
    out = tmp_path / "run"
    real_open_temp, checkpoints = atomic.open_temp, []

    def open_temp_until_disk_full(target, suffix=".tmp", **text):  # the third checkpoint finds the disk full
        fh, tmp = real_open_temp(target, suffix, **text)
        if Path(target).suffix == ".pt":
            checkpoints.append(Path(target).name)
            if len(checkpoints) == 3:
                return FullDisk(fh, room=10_000), tmp  # half-written, then the device is full
        return fh, tmp

    monkeypatch.chdir(tmp_path / "a")  # a relative --data-root, as users type it
    argv = [*TINY, "--recipe", "fer2013", "--data-root", "data/fer2013", "--epochs", "2", "--out", str(out)]
    with monkeypatch.context() as m:
        m.setattr(atomic, "open_temp", open_temp_until_disk_full)
        assert main(argv) == 1
    assert checkpoints[:2] == ["best.pt", "last.pt"] and len(checkpoints) == 3  # epoch 2: best.pt or last.pt
    assert error_lines(capsys.readouterr().err) == [
        f"error: cannot write {out / checkpoints[2]}: no space left on device; the earlier checkpoints are "
        f"intact: continue with --resume {out / 'last.pt'} once there is room"
    ]
    assert not list(out.glob(".*")), "a temporary was left behind"
    last, best = checkpoint.load(out / "last.pt"), checkpoint.load(out / "best.pt")
    assert (last["epoch"], last["step"], best["epoch"]) == (1, 0, 1)  # epoch 1's, both readable
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert last["config"]["data_root"] == str(tmp_path / "a" / "data" / "fer2013")  # absolute

    monkeypatch.chdir(tmp_path / "b")  # resumed from another working directory
    assert main(["--resume", "auto", "--out", str(out)]) == 0
    assert "resumed from" in capsys.readouterr().err
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert checkpoint.load(out / "last.pt")["epoch"] == 2 and (out / "summary.json").is_file()
    assert not (tmp_path / "b" / "data").exists()


def test_resume_auto_says_where_it_looked(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg, ckpt = configure([*TINY, "--resume", "auto"])
    assert ckpt is None and cfg.resume == "auto"
    where = tmp_path / "runs" / "synthetic-resnet18-*"
    assert capsys.readouterr().err.strip() == f"--resume auto: no checkpoint under {where}: starting a new run"
    configure([*TINY, "--resume", "auto", "--out", "elsewhere"])
    err = capsys.readouterr().err.strip()
    assert err == f"--resume auto: no checkpoint under {tmp_path / 'elsewhere'}: starting a new run"


@pytest.mark.parametrize("recipe", ["fer2013", "ferplus", "rafdb"])
def test_a_zip_as_data_root_is_one_line_unpack_it_first(tmp_path: Path, capsys, recipe: str) -> None:
    packed = tmp_path / "fer2013.zip"
    with zipfile.ZipFile(packed, "w") as z:
        z.writestr("fer2013.csv", "emotion,pixels,Usage\n")
    out = tmp_path / "run"
    assert main([*TINY, "--recipe", recipe, "--data-root", str(packed), "--out", str(out)]) == 1
    assert error_lines(capsys.readouterr().err) == [
        f"error: {packed} is an archive; unpack it first (unzip / tar -xf / 7z x) and give the unpacked folder"
    ]
    assert not out.exists()  # the failed run leaves no empty folder
