"""`ddakern predict` end to end, as a user runs it: folders with bad files, a video, outputs. Through the
command's `main` in-process (tests/inprocess.py: exit code, stdout and stderr as `python -m ddakern predict`
gives them, without an interpreter and torch start-up per call); test_predict_durable runs the real
`python -m ddakern predict` process for what needs one (signals)."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from inprocess import run_main
from PIL import Image
from predict_helpers import astronaut, coffee, corrupt_jpeg, write_checkpoint, write_video

from ddakern.inference.checkpoint import CheckpointError

cv2 = pytest.importorskip("cv2")
pytest.importorskip("skimage")


def predict(capfd, *args: str) -> subprocess.CompletedProcess:
    """`ddakern predict args --no-progress --device cpu`: its exit code, stdout and stderr."""
    from ddakern.cli import main

    argv = ["predict", *args, "--no-progress", "--device", "cpu"]
    return subprocess.CompletedProcess(argv, *run_main(main, argv, capfd))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", image_size=48)


def read_results(out: Path) -> tuple[list[dict], list[dict]]:
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return rows, records


def test_folder_with_bad_files(ckpt, tmp_path, capfd):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    Image.fromarray(astronaut()).save(folder / "astronaut.jpg", quality=92)
    Image.fromarray(coffee()).save(folder / "nested" / "coffee.png")
    corrupt_jpeg(folder / "broken.jpg", astronaut())
    (folder / "notes.jpg").write_text("this is a text file, not a JPEG\n")
    out = tmp_path / "out"
    r = predict(capfd, str(ckpt), str(folder), "--out", str(out), "--annotate")
    assert r.returncode == 0, r.stderr
    skipped = [line for line in r.stderr.splitlines() if line.startswith("skipped:")]
    assert len(skipped) == 2
    assert any("broken.jpg" in s for s in skipped) and any("notes.jpg" in s for s in skipped)
    assert any("coffee.png: no face found" in line for line in r.stderr.splitlines())
    assert "2 images, 0 video frames, 1 face in" in r.stdout and "2 inputs skipped" in r.stdout
    rows, records = read_results(out)
    assert [Path(x["file"]).name for x in rows] == ["astronaut.jpg", "coffee.png"]
    assert rows[0]["label"] in json.loads(json.dumps(records[0]["probabilities"]))
    assert rows[1]["note"] == "no face found" and records[1]["box"] is None
    annotated = cv2.imread(str(out / "annotated" / "astronaut.jpg"))
    assert annotated.shape == (512, 512, 3)
    assert not np.array_equal(annotated[:, :, ::-1], astronaut())  # something was drawn


def test_results_are_not_overwritten_unasked(ckpt, tmp_path, capfd):
    img = tmp_path / "a.jpg"
    Image.fromarray(astronaut()).save(img)
    out = tmp_path / "out"
    assert predict(capfd, str(ckpt), str(img), "--out", str(out)).returncode == 0
    before = (out / "predictions.csv").read_bytes()
    r = predict(capfd, str(ckpt), str(img), "--out", str(out))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "--overwrite" in r.stderr
    assert (out / "predictions.csv").read_bytes() == before
    assert predict(capfd, str(ckpt), str(img), "--out", str(out), "--overwrite").returncode == 0
    assert not list(out.glob(".*.tmp"))  # temp files renamed away


def test_video_every_k_with_smoothing(ckpt, tmp_path, capfd):
    video = tmp_path / "clip.avi"
    write_video(video)
    out = tmp_path / "out"
    r = predict(capfd, str(ckpt), str(video), "--out", str(out), "--every", "2", "--smooth", "0.5", "--annotate")
    assert r.returncode == 0, r.stderr
    assert "6 of 12 frames processed (every 2)" in r.stderr and "processed frames/s" in r.stderr
    rows, records = read_results(out)
    assert [int(x["frame"]) for x in rows] == [0, 2, 4, 6, 8, 10]  # one face per processed frame
    assert len(records) == len(rows)
    for row, rec in zip(rows, records):
        assert int(row["frame"]) == rec["frame"] and row["label"] == rec["label"]
        assert [int(row[k]) for k in ("x0", "y0", "x1", "y1")] == rec["box"]
        for name, p in rec["probabilities"].items():
            assert abs(float(row[f"p_{name}"]) - p) < 1e-6
    x_centres = [(r["box"][0] + r["box"][2]) / 2 for r in records]
    assert all(b < a for a, b in zip(x_centres, x_centres[1:]))  # the face moves left as the window moves right
    cap = cv2.VideoCapture(str(out / "annotated" / "clip.mp4"))
    frames = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (320, 320, 3)
        frames += 1
    assert frames == 12


def test_missing_inputs_and_bad_checkpoint_are_one_line(ckpt, tmp_path, capfd):
    r = predict(capfd, str(ckpt), str(tmp_path / "nothing.jpg"), "--out", str(tmp_path / "o"))
    assert r.returncode == 0 and "skipped: " in r.stderr and "no such file or folder" in r.stderr
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    r = predict(capfd, str(bad), str(tmp_path), "--out", str(tmp_path / "o2"))
    assert r.returncode == 1 and r.stderr.startswith("error: ") and r.stderr.strip().count("\n") == 0


def test_webcam_without_camera_is_reported(ckpt, tmp_path, capfd):
    r = predict(capfd, str(ckpt), "7", "--out", str(tmp_path / "o"), "--max-frames", "3")
    assert r.returncode == 0
    assert "webcam:7: no camera with index 7 could be opened" in r.stderr


def test_min_face_option(ckpt, tmp_path, capsys):
    """--min-face in pixels or as a fraction is honoured; bad values are one line and exit 2 (in-process)."""
    from ddakern.cli.predict import main

    img = tmp_path / "a.jpg"
    Image.fromarray(astronaut()).save(img)  # face box about 96 px
    common = [str(ckpt), str(img), "--no-progress", "--device", "cpu"]
    assert main([*common, "--out", str(tmp_path / "o1"), "--min-face", "150"]) == 0
    assert main([*common, "--out", str(tmp_path / "o2"), "--min-face", "0.1"]) == 0
    assert read_results(tmp_path / "o1")[0][0]["note"] == "no face found"
    assert read_results(tmp_path / "o2")[0][0]["label"] != ""
    capsys.readouterr()
    for i, bad in enumerate((["--min-face", "abc"], ["--min-face", "0"], ["--min-face", "40", "--detector", "none"])):
        assert main([*common, "--out", str(tmp_path / f"bad{i}"), *bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.strip().count("\n") == 0 and "min" in err


def test_bad_device_is_one_line_before_any_work(ckpt, tmp_path, capfd, monkeypatch):
    """A device this machine does not have (a typo, CUDA without a GPU, a GPU index past the last) is one
    line and exit 2, and leaves no --out behind (it was a torch traceback at the model's first move)."""
    import torch

    from ddakern.cli import main

    cases = {"gpu": "is not a device name", "cuda": "has no CUDA GPU", "cuda:3": "has no CUDA GPU"}
    if torch.cuda.is_available():
        cases = {"gpu": "is not a device name", f"cuda:{torch.cuda.device_count()}": "CUDA GPU(s), cuda:0 to"}
    photo = tmp_path / "astronaut.png"
    Image.fromarray(astronaut()).save(photo)
    for device, says in cases.items():
        out = tmp_path / f"o_{device}"
        code, _, err = run_main(main, ["predict", str(ckpt), str(photo), "--out", str(out), "--device", device], capfd)
        assert code == 2 and err.strip().count("\n") == 0, err
        assert err.startswith(f"error: device {device!r}") and says in err
        assert not out.exists()


def test_onnx_backend_runs_on_the_gpu_asked_for(tmp_path, monkeypatch):
    """`--device cuda:1` with an .onnx file: ONNX Runtime's CUDA provider gets device_id 1 (a bare provider
    name runs on GPU 0). ONNX Runtime's session is recorded, as this machine has no GPU."""
    import torch

    ort = pytest.importorskip("onnxruntime")
    from ddakern.inference import backends

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    seen: list = []

    class Session:
        def __init__(self, path, providers):
            seen.append(providers)
            raise RuntimeError("recorded")

    monkeypatch.setattr(ort, "InferenceSession", Session)
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"x")
    for device, index in (("cuda:1", 1), ("cuda", 0)):
        with pytest.raises(CheckpointError):
            backends.OnnxBackend(onnx_file, device)
        assert seen[-1] == [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    with pytest.raises(CheckpointError):
        backends.OnnxBackend(onnx_file, "cpu")
    assert seen[-1] == ["CPUExecutionProvider"]


def test_onnx_on_a_gpu_without_a_usable_cuda_provider_is_said(tmp_path, monkeypatch, capsys):
    """ONNX Runtime falls back to the CPU without an error when its CUDA provider cannot be used (the CPU
    `onnxruntime` package installed beside onnxruntime-gpu, or CUDA libraries it cannot load): an explicit
    --device cuda is refused in one line, auto says it runs on the CPU. The session is a stand-in (no GPU
    here) answering get_providers() as ONNX Runtime does after such a fallback."""
    import torch

    ort = pytest.importorskip("onnxruntime")
    from ddakern.inference import backends

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])

    class FellBack:
        def __init__(self, path, providers):
            pass

        def get_providers(self):
            return ["CPUExecutionProvider"]

        def get_inputs(self):
            raise RuntimeError("stand-in: past the provider check")

    monkeypatch.setattr(ort, "InferenceSession", FellBack)
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"--device cuda: ONNX Runtime has no usable CUDA provider") as e:
        backends.OnnxBackend(onnx_file, "cuda")
    assert "\n" not in str(e.value)
    with pytest.raises(RuntimeError, match="past the provider check"):
        backends.OnnxBackend(onnx_file, "auto")
    assert "running on the CPU: ONNX Runtime has no usable CUDA provider" in capsys.readouterr().err
