"""train.run_folder on real folders: bad --out paths, refusing to overwrite a run, stale temporaries, umask."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from ddakern.atomic import apply_umask
from ddakern.folder_lock import release
from train.run_folder import RunFolderError, claim, clean_stale_temporaries, remove_if_empty


def check_out(out: Path, **kw) -> bool:
    """claim() and give the lock back: whether the folder was created."""
    created, fd = claim(out, **kw)
    release(fd)
    return created


def test_file_and_file_parent_are_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunFolderError, match=r"--out .*/f: is a file, not a folder"):
        check_out(tmp_path / "f")
    with pytest.raises(RunFolderError, match=r"/f is a file, so no folder can be made under it"):
        check_out(tmp_path / "f" / "run")


def test_unwritable_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir(mode=0o500)
    # root writes through permission bits; /proc takes no new folders from anyone
    target = Path("/proc/ddakern-run") if os.geteuid() == 0 else tmp_path / "ro" / "run"
    with pytest.raises(RunFolderError, match=r"cannot write there"):
        check_out(target)


def test_existing_run_is_refused_unless_resumed_or_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert check_out(out) is True and out.is_dir()
    assert check_out(out) is False  # an empty folder is fine
    (out / "last.pt").write_bytes(b"x")
    with pytest.raises(RunFolderError, match=r"already holds a run \(last\.pt\); continue it with --resume auto"):
        check_out(out)
    check_out(out, resuming=True)
    check_out(out, overwrite=True)
    assert (out / "last.pt").read_bytes() == b"x"  # checking never deletes


def test_stale_temporaries_removed_and_empty_folder_dropped(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / ".best.pt.abc123.tmp").write_bytes(b"0" * 100)
    (out / "best.pt").write_bytes(b"keep")
    assert [p.name for p in clean_stale_temporaries(out)] == [".best.pt.abc123.tmp"]
    assert sorted(p.name for p in out.iterdir()) == ["best.pt"]
    assert remove_if_empty(out) is False and out.is_dir()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert remove_if_empty(empty) is True and not empty.exists()


def test_apply_umask_gives_mkstemp_files_the_users_mode(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        fd, name = tempfile.mkstemp(dir=tmp_path)
        os.close(fd)
        assert stat.S_IMODE(os.stat(name).st_mode) == 0o600
        apply_umask(Path(name))
        assert stat.S_IMODE(os.stat(name).st_mode) == 0o640
    finally:
        os.umask(old)
