"""Loading never runs code from a file: checkpoints (one reader, train reads with it: test_checkpoint_format)
and .pkl weights."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from predict_helpers import write_checkpoint

from ddakern.inference.checkpoint import CheckpointError, load_model, read_checkpoint
from ddakern.models.weights import WeightsError, read_state_dict
from ddakern.serialization import UnsafeFileError, load_numpy_pickle, torch_load


class WritesMarker:
    """Unpickling this calls builtins.open(marker, 'w'), i.e. runs code with an effect we can see."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", [WritesMarker, RunsShell])
def test_checkpoint_with_code_is_refused_and_code_does_not_run(tmp_path, payload):
    marker = tmp_path / "ran"
    path = write_checkpoint(tmp_path / "good.pt")
    evil = tmp_path / "evil.pt"
    state = torch_load(path)
    state["extra"] = payload(marker)
    torch.save(state, evil)
    with pytest.raises(UnsafeFileError, match="refused to load") as e:
        torch_load(evil)
    assert str(evil) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="refused to load"):
        read_checkpoint(evil)
    assert not marker.exists()


def test_train_style_checkpoint_with_numpy_rng_state_loads(tmp_path):
    path = write_checkpoint(tmp_path / "best.pt")
    ckpt = read_checkpoint(path)
    state = ckpt["rng"][0]["numpy"]
    assert state[0] == "MT19937" and isinstance(state[1], np.ndarray) and state[1].dtype == np.uint32
    np.random.set_state(state)  # the restored state is usable
    model, spec = load_model(path)
    assert spec.image_size == 64 and len(spec.class_names) == 7
    assert not model.training


def test_pkl_of_numpy_arrays_loads_and_anything_else_is_refused(tmp_path):
    good = tmp_path / "weights.pkl"
    with open(good, "wb") as f:
        pickle.dump({"conv1.weight": np.ones((2, 3), np.float32), "fc.bias": np.arange(3.0)}, f)
    assert load_numpy_pickle(good)["conv1.weight"].shape == (2, 3)
    assert read_state_dict(good)["fc.bias"].tolist() == [0.0, 1.0, 2.0]

    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pkl"
    with open(evil, "wb") as f:
        pickle.dump({"conv1.weight": np.ones(2), "x": WritesMarker(marker)}, f)
    with pytest.raises(WeightsError, match=r"evil\.pkl: refused to load: it needs the global (io|builtins)\.open"):
        read_state_dict(evil)
    with pytest.raises(UnsafeFileError):
        load_numpy_pickle(evil)
    assert not marker.exists()


def test_files_written_under_numpy_1_module_paths_load(tmp_path):
    """numpy 1.x pickles name numpy.core.multiarray; the allow-list admits those paths too."""
    import zipfile

    arr = np.arange(6, dtype=np.uint32)
    raw = pickle.dumps({"a": arr}, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in raw
    (tmp_path / "old.pkl").write_bytes(raw)
    assert load_numpy_pickle(tmp_path / "old.pkl")["a"].tolist() == arr.tolist()

    torch.save({"rng": np.random.get_state()}, tmp_path / "new.pt")
    with zipfile.ZipFile(tmp_path / "new.pt") as src, zipfile.ZipFile(tmp_path / "old.pt", "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
                assert b"numpy.core.multiarray" in data
            dst.writestr(item, data)
    state = torch_load(tmp_path / "old.pt")["rng"]
    assert state[0] == "MT19937" and state[1].dtype == np.uint32 and state[1].shape == (624,)


def test_damaged_files_are_not_called_unsafe(tmp_path):
    (tmp_path / "text.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "list.pt").write_bytes(pickle.dumps([1, 2, 3]))
    good = write_checkpoint(tmp_path / "good.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(good[: len(good) // 2])
    (tmp_path / "proto4.pt").write_bytes(b"\x80\x04" + os.urandom(200))  # starts like pickle protocol 4
    for name in ("text.pt", "list.pt", "half.pt", "proto4.pt"):
        with warnings.catch_warnings(record=True) as seen, pytest.raises(CheckpointError, match="cannot read") as e:
            warnings.simplefilter("always")
            read_checkpoint(tmp_path / name)
        assert "refused" not in str(e.value) and "\n" not in str(e.value)
        assert not [w for w in seen if "pickle protocol" in str(w.message)], name  # no warning before the one line


def test_damaged_weights_file_is_one_error_without_a_protocol_warning(tmp_path):
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"\x80\x05" + os.urandom(200))  # starts like pickle protocol 5: torch would warn first
    with warnings.catch_warnings(record=True) as seen, pytest.raises(WeightsError, match="weights.pth") as e:
        warnings.simplefilter("always")
        read_state_dict(bad)
    assert "\n" not in str(e.value) and not [w for w in seen if "pickle protocol" in str(w.message)]
