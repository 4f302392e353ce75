"""Predict throughput and latency per face: detector apart from classifier; classifier at batch 1 and 32,
eager vs torch.compile vs ONNX Runtime (CPU; CUDA for the PyTorch backends when present).

The classifier is the built-in recipe's model (resnet18_dda, DDA after stage 4, width 64) at 64 px on
CPU and 224 px on CUDA; faces are real crops of skimage's astronaut. `extra_info` holds faces/s and
ms per face; ratios are within one run (`group` = batch size). Under --benchmark-disable each case
runs once and its results are checked (probabilities, backends agreeing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from benchutil import SCALE, median_s, skip_compile_if_disabled, sync

# before the imports that need them: a machine without them (the GPU machine may lack all three) skips this
# module instead of stopping the whole benchmark run at collection
pytest.importorskip("PIL")
cv2 = pytest.importorskip("cv2")
skimage_data = pytest.importorskip("skimage.data")

from ddakern.inference.backends import OnnxBackend, TorchBackend  # noqa: E402
from ddakern.inference.checkpoint import ModelSpec  # noqa: E402
from ddakern.inference.detect import HaarDetector, crop, square_box  # noqa: E402
from ddakern.inference.export import export  # noqa: E402
from ddakern.inference.predictor import Predictor  # noqa: E402
from ddakern.models import create  # noqa: E402

IMAGE_SIZE = 224 if SCALE.cuda else 64
CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
SPEC = ModelSpec("resnet18_dda", CLASSES, IMAGE_SIZE, "unit", (4,), {"width": 64, "spatial_width": 64})


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create("resnet18_dda", dda_stages=(4,), width=64, spatial_width=64).eval()


@pytest.fixture(scope="module")
def faces() -> list[np.ndarray]:
    """32 real face crops: the astronaut's face at slightly different margins."""
    rgb = skimage_data.astronaut()
    (det,) = HaarDetector()(rgb)
    return [crop(rgb, square_box(det.box, 0.1 + 0.01 * i)) for i in range(32)]


@pytest.fixture(scope="module")
def onnx_file(model, tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime")
    return export(model, SPEC, "onnx", tmp_path_factory.mktemp("onnx") / "m.onnx")


def backend_of(variant: str, model, onnx_file_getter):
    if variant == "onnxruntime":
        return OnnxBackend(onnx_file_getter(), device=SCALE.device)
    return TorchBackend(model, SCALE.device, compile=variant == "compile")


def test_detector_haar(benchmark):
    rgb = skimage_data.astronaut()
    det = HaarDetector()
    found = benchmark(det, rgb)
    assert len(found) == 1
    s = median_s(benchmark)
    benchmark.extra_info.update(stage="detector", image="astronaut 512x512")
    if s is not None:
        benchmark.extra_info.update(images_per_s=1 / s, ms_per_image=1e3 * s)
        assert 0 < s < 5


@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("variant", ["eager", "compile", "onnxruntime"])
def test_classifier(benchmark, request, model, faces, variant, batch):
    if variant == "compile":
        skip_compile_if_disabled(benchmark)
    benchmark.group = f"classifier batch {batch}"
    backend = backend_of(variant, model, lambda: request.getfixturevalue("onnx_file"))
    pred = Predictor(backend, SPEC, detector="none", batch_size=batch)
    crops = faces[:batch]
    pred.classify(crops)  # warm-up (compiles, allocates)

    def run() -> np.ndarray:
        p = pred.classify(crops)
        sync()
        return p

    probs = benchmark(run)
    assert probs.shape == (batch, len(CLASSES))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    reference = Predictor(TorchBackend(model, "cpu"), SPEC, detector="none").classify(crops)
    np.testing.assert_allclose(probs, reference, atol=1e-4)  # every backend computes the same thing
    s = median_s(benchmark)
    benchmark.extra_info.update(stage="classifier", variant=variant, batch=batch, device=str(SCALE.device))
    if s is not None:
        benchmark.extra_info.update(faces_per_s=batch / s, ms_per_face=1e3 * s / batch)


def test_predict_end_to_end(benchmark, model):
    """Decode-free predict of one photo: detection + crop + classification (batch 1)."""
    rgb = skimage_data.astronaut()
    pred = Predictor(TorchBackend(model, SCALE.device), SPEC, detector="haar")
    result = benchmark(pred.predict, rgb)
    assert len(result.faces) == 1
    s = median_s(benchmark)
    if s is not None:
        benchmark.extra_info.update(stage="detector+classifier", images_per_s=1 / s, faces_per_s=1 / s)


# --- faces/s of what a user runs, each against the classifier alone in the same run (issue 21) ---------------------
# One group, "predict faces/s": the classifier alone (PyTorch, batch 32, the baseline), the whole pipeline on a
# folder of photos and on a video (decode, detect, crop, classify, write the CSV), and the classifier exported
# to ONNX (fp32) and quantized to int8 (ONNX Runtime CPU). Benchmarking: 24 photos of 1024x768 and a 48-frame
# 640x480 video, one face each (the case); under --benchmark-disable (CI): 3 small photos, 4 frames.

FACES_PER_S: dict[str, float] = {}
"""faces/s of each row in this run; the classifier row runs first and is the ratios' denominator."""
PREDICT_GROUP = "predict faces/s"


def _full_size(request) -> bool:
    return not request.config.getoption("benchmark_disable", False)


def _scene(face: np.ndarray, width: int, height: int, shift: int) -> np.ndarray:
    """A width x height photo: a gray-textured background with the face (scaled to 3/4 of the height)."""
    rng = np.random.default_rng(shift)
    canvas = rng.integers(90, 140, (height, width, 3), dtype=np.uint8)
    side = 3 * height // 4
    f = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    x0 = (width - side) * (shift % 4 + 1) // 5
    canvas[(height - side) // 2 : (height - side) // 2 + side, x0 : x0 + side] = f
    return canvas


@pytest.fixture(scope="module")
def media(request, tmp_path_factory) -> dict[str, object]:
    """A folder of photos and a video, one face each, at the run's size (see above)."""
    full = _full_size(request)
    rgb = skimage_data.astronaut()
    (det,) = HaarDetector()(rgb)
    face = crop(rgb, square_box(det.box, 0.6))
    folder = tmp_path_factory.mktemp("photos")
    n_photos, (w, h) = (24, (1024, 768)) if full else (3, (320, 240))
    for i in range(n_photos):
        cv2.imwrite(str(folder / f"p{i:02d}.jpg"), cv2.cvtColor(_scene(face, w, h, i), cv2.COLOR_RGB2BGR))
    video = tmp_path_factory.mktemp("video") / "clip.mp4"
    n_frames, (vw, vh) = (48, (640, 480)) if full else (4, (240, 180))
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (vw, vh))
    for i in range(n_frames):
        writer.write(cv2.cvtColor(_scene(face, vw, vh, i // 8), cv2.COLOR_RGB2BGR))
    writer.release()
    return {"folder": folder, "photos": n_photos, "video": video, "frames": n_frames}


def _record(benchmark, variant: str, faces: int, note: str) -> None:
    """faces/s, ms per face and the ratio to the classifier alone (same run) into extra_info."""
    benchmark.extra_info.update(table="predict", variant=variant, baseline="classifier", faces_per_call=faces,
                                stage=note, device=str(SCALE.device))  # fmt: skip
    s = median_s(benchmark)
    if s is None:
        return
    FACES_PER_S[variant] = faces / s
    benchmark.extra_info.update(faces_per_s=faces / s, ms_per_face=1e3 * s / faces)
    if "classifier" in FACES_PER_S:
        benchmark.extra_info["ratio_to_classifier"] = FACES_PER_S[variant] / FACES_PER_S["classifier"]


def test_predict_classifier_alone(benchmark, model, faces):
    """The baseline: 32 face crops through Predictor.classify (PyTorch, batch 32): preprocessing + model."""
    benchmark.group = PREDICT_GROUP  # set before the run: pytest-benchmark reads it then
    pred = Predictor(TorchBackend(model, SCALE.device), SPEC, detector="none", batch_size=32)
    pred.classify(faces)

    def run() -> np.ndarray:
        p = pred.classify(faces)
        sync()
        return p

    probs = benchmark(run)
    assert probs.shape == (len(faces), len(CLASSES))
    _record(benchmark, "classifier", len(faces), "classifier alone, batch 32")


def _pipeline_round(pred: Predictor, sources: list, out_root: Path, video: bool) -> int:
    """One predict run over `sources` into a fresh folder: the faces found."""
    from ddakern.inference.pipeline import Options, Totals, run_images, run_video
    from ddakern.inference.results import ResultWriter

    out = out_root / f"r{len(list(out_root.iterdir()))}"
    out.mkdir()  # the CLI makes (and locks) --out before the writer opens its files
    writer, totals = ResultWriter(out, pred.class_names), Totals()
    opts = Options(out, progress=False)
    if video:
        for s in sources:
            run_video(pred, s, writer, opts, totals)
    else:
        run_images(pred, sources, writer, opts, totals)
    writer.close()
    return totals.faces


@pytest.mark.parametrize("kind", ["photos", "video"])
def test_predict_pipeline(benchmark, model, media, tmp_path, kind):
    """`predict` on a folder of photos / a video (the pipeline's public entry points), Haar detector, batch 32."""
    pytest.importorskip("tqdm")
    from ddakern.inference.sources import collect

    benchmark.group = PREDICT_GROUP
    pred = Predictor(TorchBackend(model, SCALE.device), SPEC, detector="haar", batch_size=32)
    sources, problems = collect([str(media["video"] if kind == "video" else media["folder"])])
    assert not problems
    expected = media["frames"] if kind == "video" else media["photos"]
    found = benchmark.pedantic(_pipeline_round, args=(pred, sources, tmp_path, kind == "video"), rounds=SCALE.rounds,
                               iterations=1, warmup_rounds=0 if benchmark.disabled else 1)  # fmt: skip
    assert found == expected, f"{found} faces found in {expected} {kind} (one face each)"
    _record(benchmark, kind, expected, f"predict on {expected} {kind}: decode, detect, classify, write")


@pytest.fixture(scope="module")
def int8_file(model, faces, onnx_file, tmp_path_factory) -> Path:
    """The benchmark classifier quantized to int8, calibrated on the face crops (as export --quantize does)."""
    from ddakern.inference.images import preprocess
    from ddakern.inference.quantize import quantize_int8

    x = preprocess(faces, IMAGE_SIZE, *SPEC.mean_std).numpy()
    return quantize_int8(onnx_file, tmp_path_factory.mktemp("int8") / "m.int8.onnx", x[:16])


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_predict_onnx(benchmark, request, faces, precision):
    """The classifier exported to ONNX (fp32) or quantized to int8, ONNX Runtime on the CPU, batch 32."""
    benchmark.group = PREDICT_GROUP
    path = request.getfixturevalue("onnx_file" if precision == "fp32" else "int8_file")
    pred = Predictor(OnnxBackend(path, device="cpu"), SPEC, detector="none", batch_size=32)
    pred.classify(faces)
    probs = benchmark(pred.classify, faces)
    assert probs.shape == (len(faces), len(CLASSES))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    _record(benchmark, f"onnx {precision}", len(faces), f"ONNX Runtime CPU {precision}, batch 32")
