"""`predict` loses nothing: rows kept on SIGINT / SIGTERM / disk full / unwritable outputs, one line and
the right exit code, --resume continues (same rows as an uninterrupted run), output names never
collide, a missing optional package is one line before any work. In-process except the real signals."""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from predict_helpers import astronaut, coffee, write_checkpoint, write_video

import ddakern.cli
import ddakern.inference
from ddakern.inference import results, run_state
from ddakern.inference.outputs import output_stems

cv2 = pytest.importorskip("cv2")
pytest.importorskip("skimage")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", image_size=48, width=32)


def n(count: int, word: str) -> str:
    """How predict's summary counts: "1 face", "2 faces"."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def predict(capsys, *args: str) -> tuple[int, str, str]:
    """`python -m ddakern predict ARGS` in this process: (exit code, stdout, stderr)."""
    code = ddakern.cli.main(["predict", *map(str, args), "--no-progress", "--device", "cpu"])
    out, err = capsys.readouterr()
    return code, out, err


def spawn(*args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ddakern", "predict", *map(str, args), "--no-progress", "--device", "cpu"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_at_debug_wait(p: subprocess.Popen, sig: int) -> tuple[int, str, str]:
    """Wait for `debug-wait` on stdout, send `sig`, return (exit code, the rest of stdout, stderr)."""
    line = p.stdout.readline()
    assert line.startswith("debug-wait"), (line, p.stderr.read() if p.poll() is not None else "")
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    return p.returncode, out, err


def rows(out: Path) -> tuple[list[dict], list[dict]]:
    with open(out / "predictions.csv", newline="") as f:
        table = list(csv.DictReader(f))
    return table, [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def hidden(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*")]


def same_rows(a: Path, b: Path) -> None:
    """The same rows in both folders (probabilities to 1e-6: batches of other sizes round differently)."""
    (ta, ra), (tb, rb) = rows(a), rows(b)
    assert [r["frame"] for r in ra] == [r["frame"] for r in rb] and len(ta) == len(tb)
    for x, y in zip(ra, rb):
        assert {k: v for k, v in x.items() if k != "probabilities"} == {
            k: v for k, v in y.items() if k != "probabilities"
        }
        if x["probabilities"] is not None:
            assert np.allclose(list(x["probabilities"].values()), list(y["probabilities"].values()), atol=1e-6)


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("error:")]


def photos(folder: Path, n: int) -> list[Path]:
    """n small real photos (the astronaut's face, shifted in 5 ways; every third one the coffee cup, no face)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        k = i % 5
        rgb = coffee()[::2, ::2] if i % 3 == 2 else astronaut()[8 * k : 8 * k + 300, 60 + 4 * k : 360 + 4 * k]
        paths.append(folder / f"p{i}.png")
        Image.fromarray(np.ascontiguousarray(rgb)).save(paths[-1])
    return paths


def video_frames(path: Path) -> list[np.ndarray]:
    cap, found = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = cap.read()
        if not ok:
            return found
        found.append(frame)


def test_sigint_mid_video_keeps_every_row_and_resume_matches_an_uninterrupted_run(ckpt, tmp_path, capsys):
    video, total = tmp_path / "clip.avi", 40
    write_video(video, total)
    common = ["--every", "1", "--smooth", "0.5", "--annotate", "--batch-size", "4"]
    out = tmp_path / "out"
    # stopped once 2 rows are written: the frames already read (the batch being written and those decoded
    # and detected ahead of the classifier) are finished, then the run stops before the end of the video
    p = spawn(ckpt, video, "--out", out, *common, "--debug-wait-after-rows", "2")
    code, stdout, err = stop_at_debug_wait(p, signal.SIGINT)
    assert code == 130, err
    table, records = rows(out)
    kept = len(table)
    assert 4 <= kept < total, kept  # at least the batch in progress; not the whole video
    assert [int(r["frame"]) for r in table] == [r["frame"] for r in records] == list(range(kept))
    (line,) = [x for x in err.splitlines() if x.startswith("interrupted")]
    files = f"{out / 'predictions.csv'} and {out / 'predictions.jsonl'}"
    assert line == f"interrupted by SIGINT: kept {kept} rows in {files}; continue with --resume"
    assert f"0 images, {n(kept, 'video frame')}, {n(kept, 'face')}" in stdout  # the summary counts what the files hold
    assert len(video_frames(out / "annotated" / "clip.mp4")) == kept  # finalised up to the stop, not hidden
    assert hidden(out) == [] and json.loads((out / "predict_state.json").read_text())["status"] == "interrupted"

    code, _, err = predict(capsys, ckpt, video, "--out", out, *common)  # a plain rerun is refused
    assert code == 2 and len(error_lines(err)) == 1 and "--resume" in err and "unfinished run" in err
    code, stdout, err = predict(capsys, ckpt, video, "--out", out, *common, "--resume")
    assert code == 0, err
    resumed_err, resumed_out = err, stdout
    ref = tmp_path / "ref"
    code, stdout, _ = predict(capsys, ckpt, video, "--out", ref, *common)
    assert code == 0
    faces = int(re.search(rf"0 images, {n(total, 'video frame')}, (\d+) faces?", stdout).group(1))
    rest = total - kept  # the resumed run counts only its own frames and faces
    assert f"resumed after frame {kept - 1}" in resumed_err
    assert f"0 images, {n(rest, 'video frame')}, {n(faces - kept, 'face')}" in resumed_out
    same_rows(out, ref)  # smoothing state and rows as if never stopped
    got, want = video_frames(out / "annotated" / "clip.mp4"), video_frames(ref / "annotated" / "clip.mp4")
    assert len(got) == len(want) == total and all(np.array_equal(a, b) for a, b in zip(got, want))
    assert hidden(out) == [] and json.loads((out / "predict_state.json").read_text())["status"] == "done"


def test_sigterm_mid_folder_then_resume_skips_what_is_done(ckpt, tmp_path, capsys):
    folder, total = tmp_path / "photos", 16
    photos(folder, total)
    out = tmp_path / "out"
    (out / "annotated").mkdir(parents=True)
    stale = [out / ".predictions.csv.k2j4h5g6.tmp", out / "annotated" / ".clip.mp4.ab12cd34.mp4"]
    for p in stale:  # what an older version's killed run left
        p.write_text("stale")
    (out / ".keep.me").write_text("the user's")
    p = spawn(ckpt, folder, "--out", out, "--annotate", "--batch-size", "2", "--debug-wait-after-rows", "1")
    code, stdout, err = stop_at_debug_wait(p, signal.SIGTERM)
    assert code == 143, err
    assert "removed 2 temporary files left in" in err and not any(p.exists() for p in stale)
    assert (out / ".keep.me").exists()
    table, records = rows(out)
    kept = len(table)
    assert 2 <= kept < total, kept  # the batch being written and the photos read ahead; not the whole folder
    assert f"interrupted by SIGTERM: kept {kept} rows in {out / 'predictions.csv'}" in err
    names = sorted(f"p{i}.png" for i in range(total))  # the order the folder is read in
    assert [Path(r["file"]).name for r in table] == [Path(r["file"]).name for r in records] == names[:kept]
    assert sorted(p.name for p in (out / "annotated").iterdir()) == sorted(names[:kept])
    code, stdout, err = predict(capsys, ckpt, folder, "--out", out, "--annotate", "--resume")
    assert code == 0, err
    assert "resuming" in err and f"{n(total - kept, 'image')}, 0 video frames" in stdout  # kept: not again
    table, records = rows(out)
    assert sorted(Path(r["file"]).name for r in table) == sorted(names)
    notes = {Path(r["file"]).name: r["note"] for r in records}
    assert notes == {f"p{i}.png": "no face found" if i % 3 == 2 else None for i in range(total)}
    assert len(list((out / "annotated").iterdir())) == total and hidden(out) == [out / ".keep.me"]


def test_disk_full_keeps_complete_rows_in_one_line_and_resume_finishes(ckpt, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "photos"
    photos(folder, 4)
    out = tmp_path / "out"
    real = results._write_all

    def full_at_p3(fd: int, data: bytes) -> None:
        if b"p3.png" in data and data.startswith(b"{"):  # JSONL of the 4th image: half of it, then ENOSPC
            real(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    monkeypatch.setattr(results, "_write_all", full_at_p3)
    code, stdout, err = predict(capsys, ckpt, folder, "--out", out, "--batch-size", "2")
    assert code == 1
    assert error_lines(err) == [
        f"error: cannot write {out / 'predictions.jsonl'}: no space left on device; kept 3 rows in "
        f"{out / 'predictions.csv'} and {out / 'predictions.jsonl'}; continue with --resume once fixed"
    ]
    table, records = rows(out)  # the half-written image is rolled back in both files
    assert (
        [Path(r["file"]).name for r in table]
        == [Path(r["file"]).name for r in records]
        == ["p0.png", "p1.png", "p2.png"]
    )
    assert json.loads((out / "predict_state.json").read_text())["status"] == "failed"
    before = [(out / name).read_bytes() for name in results.RESULT_FILES]
    monkeypatch.setattr(results, "_write_all", real)
    code, stdout, err = predict(capsys, ckpt, folder, "--out", out, "--resume")
    assert code == 0 and "1 image, 0 video frames" in stdout, err  # only p3 predicted
    for name, kept in zip(results.RESULT_FILES, before):  # the kept rows unchanged, p3's appended
        assert (out / name).read_bytes().startswith(kept)
    assert [Path(r["file"]).name for r in rows(out)[1]] == ["p0.png", "p1.png", "p2.png", "p3.png"]


def test_unwritable_out_and_an_image_opencv_cannot_write(ckpt, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "photos"
    photos(folder, 2)
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    code, _, err = predict(capsys, ckpt, folder, "--out", blocker / "out")
    assert code == 1 and error_lines(err) == [f"error: cannot write {blocker / 'out'}: not a directory"]

    real = cv2.imwrite
    monkeypatch.setattr(cv2, "imwrite", lambda path, img: False if ".p1.png." in path else real(path, img))
    out = tmp_path / "out"
    code, _, err = predict(capsys, ckpt, folder, "--out", out, "--annotate")
    assert code == 1
    (line,) = error_lines(err)
    assert line.startswith(f"error: cannot write {out / 'annotated' / 'p1.png'}: OpenCV could not write this image;")
    assert "kept 1 rows" in line
    assert [Path(r["file"]).name for r in rows(out)[0]] == ["p0.png"] and hidden(out) == []


def test_output_names_never_collide(ckpt, tmp_path, capsys):
    for sub in ("a", "b"):
        (tmp_path / "in" / sub).mkdir(parents=True)
        write_video(tmp_path / "in" / sub / "clip.avi", 2)
        Image.fromarray(astronaut()[::2, ::2]).save(tmp_path / "in" / sub / "x.png")
    out = tmp_path / "out"
    code, _, err = predict(capsys, ckpt, tmp_path / "in", "--out", out, "--annotate")
    assert code == 0, err
    found = sorted(str(p.relative_to(out / "annotated")) for p in (out / "annotated").rglob("*") if p.is_file())
    assert found == ["a/clip.mp4", "a/x.png", "b/clip.mp4", "b/x.png"]
    assert len(video_frames(out / "annotated" / "b" / "clip.mp4")) == 2
    stems = output_stems(
        [(n, Path(n)) for n in ("p/x.jpg", "q/x.jpg", "p/x.png", "/abs/y.mp4", "z/y.avi", "c.mp4", "d/c.mp4")]
        + [("webcam:0", None)]
    )  # fmt: skip
    assert stems == {
        "p/x.jpg": "p/x_jpg", "q/x.jpg": "q/x", "p/x.png": "p/x_png", "/abs/y.mp4": "abs/y", "z/y.avi": "z/y",
        "c.mp4": "c", "d/c.mp4": "d/c", "webcam:0": "webcam-0",
    }  # fmt: skip


def test_busy_out_and_options_that_differ_on_resume(ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    held = run_state.lock(out)
    try:
        code, _, err = predict(capsys, ckpt, tmp_path, "--out", out)
        assert code == 2 and error_lines(err) == [
            f"error: {out} is in use by another predict run; wait for it or choose another --out"
        ]
    finally:
        os.close(held)
    args = ddakern.cli.predict.parser().parse_args([str(ckpt), str(tmp_path), "--out", str(out), "--every", "3"])
    run_state.RunState(out, run_state.options_of(args)).save(status="interrupted")
    code, _, err = predict(capsys, ckpt, tmp_path, "--out", out, "--every", "2", "--smooth", "0.5", "--resume")
    assert code == 2 and error_lines(err) == [
        "error: --resume needs the options of the interrupted run; these differ: --every, --smooth"
    ]
    code, _, err = predict(capsys, ckpt, tmp_path, "--out", out, "--resume", "--overwrite")
    assert code == 2 and len(error_lines(err)) == 1


@pytest.mark.parametrize(
    "blocked, argv",
    [("matplotlib", ["predict", "--attention"]), ("tqdm", ["predict"]), ("onnx", ["export", "--format", "onnx"])],
)
def test_a_missing_package_is_one_line_before_any_work(ckpt, tmp_path, capsys, monkeypatch, blocked, argv):
    monkeypatch.setitem(sys.modules, blocked, None)  # what `import` sees when the package is not installed
    for name in ("ddakern.cli.predict", "ddakern.inference.pipeline", "ddakern.cli.export"):
        parent, attr = name.rsplit(".", 1)  # imported afresh (no import may come before the check), then put back
        monkeypatch.setattr(sys.modules[parent], attr, getattr(sys.modules[parent], attr, None), raising=False)
        monkeypatch.delitem(sys.modules, name, raising=False)
    out = tmp_path / "out"
    cmd, *opts = argv
    rest = [str(tmp_path), "--out", str(out)] if cmd == "predict" else ["--out", str(out / "m.onnx")]
    code = ddakern.cli.main([cmd, str(ckpt), *rest, *opts])
    err = capsys.readouterr().err
    package = {"matplotlib": "matplotlib", "tqdm": "tqdm", "onnx": "onnx"}[blocked]
    assert code == 1 and error_lines(err) == [err.strip()]
    assert f"needs {package} (" in err and "pip install 'ddakern[predict]'" in err
    assert not out.exists()


def test_the_predict_extra_installs_every_package_the_library_imports():
    """Every third-party module that ddakern/ and kernels/ import is a core dependency or in [predict]
    (skimage: only the export parity check's optional sample photo, guarded)."""
    import ast

    tomllib = pytest.importorskip("tomllib")
    from ddakern.extras import PACKAGES

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(reqs: list[str]) -> set[str]:
        return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in reqs}

    installed = names(project["dependencies"]) | names(project["optional-dependencies"]["predict"])
    dist = {**PACKAGES, "PIL": "pillow"}
    extras = names(project["optional-dependencies"]["train"])
    assert {dist[m] for m in PACKAGES} <= installed | extras  # every package a MissingExtra can name is in an extra
    imported = set()
    for root in ("ddakern", "kernels"):
        for path in (ROOT / root).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                mods += [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
                imported |= {m.split(".")[0] for m in mods}
    third_party = imported - set(sys.stdlib_module_names) - {"ddakern", "kernels", "__future__", "skimage"}
    assert {dist.get(m, m) for m in third_party} <= installed, third_party


def test_an_interrupted_write_is_taken_back_from_both_files(tmp_path):
    """ResultWriter: an interrupt between the CSV and the JSONL write takes the image back out of both."""
    from ddakern.inference.predictor import FaceRecord, ImageResult

    names = ("a", "b")
    writer = results.ResultWriter(tmp_path, names)
    face = FaceRecord((1, 2, 3, 4), 0.5, (0, 0, 5, 5), {"a": 0.25, "b": 0.75}, "b")
    writer.add("one.png", None, ImageResult([face], 8, 8))
    real, calls = results._write_all, []

    def interrupted(fd: int, data: bytes) -> None:
        calls.append(fd)
        real(fd, data)
        if len(calls) == 1:
            raise KeyboardInterrupt

    results._write_all = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            writer.add("two.png", None, ImageResult([face, face], 8, 8))
    finally:
        results._write_all = real
    writer.add("three.png", None, ImageResult([], 8, 8, "no face found"))
    writer.close()
    assert (writer.rows, writer.faces) == (2, 1)
    table, records = rows(tmp_path)
    assert [r["file"] for r in table] == [r["file"] for r in records] == ["one.png", "three.png"]
    kept = run_state.repair(tmp_path, names, set())
    assert (kept.rows, kept.images) == (2, {"one.png", "three.png"})
    assert rows(tmp_path) == (table, records)
