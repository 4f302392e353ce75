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

from ddakern.inference.backends import OnnxBackend, TorchBackend
from ddakern.inference.checkpoint import ModelSpec
from ddakern.inference.detect import HaarDetector, crop, square_box
from ddakern.inference.export import export
from ddakern.inference.predictor import Predictor
from ddakern.models import create

cv2 = pytest.importorskip("cv2")
skimage_data = pytest.importorskip("skimage.data")

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
