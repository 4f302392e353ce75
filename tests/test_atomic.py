"""ddakern.atomic on real files: contents, the user's umask, failures leave the old file and no temporary."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from ddakern import atomic


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_write_text_and_bytes_replace_with_the_users_mode(tmp_path: Path, umask_027) -> None:
    path = tmp_path / "sub" / "a.json"
    atomic.write_text(path, "one\n")
    assert path.read_text() == "one\n" and (path.stat().st_mode & 0o777) == 0o640
    atomic.write_bytes(path, b"two", fsync=True)
    assert path.read_bytes() == b"two" and os.listdir(path.parent) == ["a.json"]
    assert atomic.current_umask() == 0o027


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("old")

    def broken(fh) -> None:
        fh.write(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic.write_with(path, broken)
    with pytest.raises(OSError), atomic.temp_path(path, suffix=".png") as tmp:
        assert tmp.name.startswith(".a.txt.") and tmp.suffix == ".png"
        raise OSError("writer failed")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_torch_save_round_trips_and_open_temp_publishes(tmp_path: Path, umask_027) -> None:
    path = tmp_path / "last.pt"
    atomic.torch_save({"w": torch.arange(4)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(4))
    assert (path.stat().st_mode & 0o777) == 0o640
    fh, tmp = atomic.open_temp(tmp_path / "p.csv", encoding="utf-8", newline="")
    with fh:
        fh.write("a,b\r\n")
    assert not (tmp_path / "p.csv").exists()  # nothing visible until published
    atomic.publish(tmp, tmp_path / "p.csv")
    assert (tmp_path / "p.csv").read_bytes() == b"a,b\r\n" and sorted(os.listdir(tmp_path)) == ["last.pt", "p.csv"]


def test_a_full_disk_in_a_named_writer_or_at_fsync_is_a_write_error_naming_the_target(
    tmp_path: Path, monkeypatch
) -> None:
    path = tmp_path / "curves.png"
    path.write_bytes(b"old")
    with pytest.raises(atomic.WriteError, match=f"^cannot write {path}: no space left on device$"):
        with atomic.temp_path(path, suffix=".png") as tmp:
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as savefig / cv2 raise it

    def fsync_on_a_full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # delayed allocation: reported at fsync

    monkeypatch.setattr(atomic.os, "fsync", fsync_on_a_full_disk)
    with pytest.raises(atomic.WriteError, match="no space left on device") as e:
        atomic.write_bytes(path, b"new", fsync=True)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(path)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["curves.png"]
