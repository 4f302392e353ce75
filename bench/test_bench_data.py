"""Input pipelines: DALI (CPU and, on CUDA, GPU) against the PyTorch DataLoader, in images per second.

Both read the synthetic set written in the real formats (RAF-DB: 100 px RGB JPEG files; FER2013: 48 px
gray arrays from the CSV) through `train.data.layouts.load_layout`, apply the data set's training recipe
(flip/rotate or gray/zoom branch), resize to the training size and normalise, and deliver float32
batches on the benchmark device. One timed round is one training epoch over the split after a warm-up
epoch (pipeline build, worker start-up). Baseline: the PyTorch loader (`torch`) in the same run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from benchutil import SCALE, median_s, sync

pytest.importorskip("PIL")  # the synthetic set's writer: without Pillow (the GPU machine may lack it) skip, not stop

from train.data import SampleSet, build_loader, dali_available, make_synthetic  # noqa: E402
from train.data.layouts import load_layout  # noqa: E402

DATASETS = ("rafdb", "fer2013")
# row -> (build_loader's loader, the device its pipeline runs on; None: the benchmark device)
LOADERS = {"torch": ("torch", None), "dali-cpu": ("dali", "cpu"), "dali-gpu": ("dali", "cuda")}


def loader_options(row: str, bench_device: torch.device) -> dict[str, Any]:
    """build_loader's `loader` and `device` for a row. build_loader picks DALI's GPU operators for a CUDA
    device, so "dali-cpu" asks for the CPU always; the timed loop copies its batches to the benchmark device."""
    kind, device = LOADERS[row]
    return {"loader": kind, "device": torch.device(device) if device else bench_device}


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic face set, written once per session (train split of SCALE.data_samples images)."""
    return make_synthetic(tmp_path_factory.mktemp("synthetic"), n_train=SCALE.data_samples, n_test=8, n_val=8)


@pytest.fixture(scope="session")
def train_splits(synthetic_root: Path) -> dict[str, SampleSet]:
    """The train split of each data set's copy, read through the layouts as the training engine does."""
    return {name: load_layout(synthetic_root, family=name, holdout=0).splits["train"] for name in DATASETS}


def check_batch(x: torch.Tensor, y: torch.Tensor, classes: int) -> None:
    """A full training batch of finite, normalised images and valid labels (what the timed epoch delivers)."""
    assert x.shape == (SCALE.data_batch, 3, SCALE.data_image_size, SCALE.data_image_size) and x.dtype == torch.float32
    assert y.shape == (SCALE.data_batch,) and y.dtype == torch.int64
    assert bool(torch.isfinite(x).all()), "non-finite pixels"
    # imagenet normalisation of [0, 255] pixels (zero fill of rotations included) stays within about [-2.2, 2.7]
    assert -2.2 <= float(x.min()) < float(x.max()) <= 2.7, (float(x.min()), float(x.max()))
    assert 0 <= int(y.min()) and int(y.max()) < classes


@pytest.mark.parametrize("loader_name", list(LOADERS))
@pytest.mark.parametrize("dataset", DATASETS)
def test_input_pipeline(benchmark, train_splits: dict[str, SampleSet], dataset: str, loader_name: str) -> None:
    options = loader_options(loader_name, SCALE.device)
    if options["loader"] == "dali" and not dali_available():
        pytest.skip("nvidia-dali is not installed (build_loader would fall back to the PyTorch loader)")
    if loader_name == "dali-gpu" and not SCALE.cuda:
        pytest.skip("the DALI GPU pipeline needs CUDA")
    samples = train_splits[dataset]
    loader = build_loader(
        samples,
        train=True,
        batch_size=SCALE.data_batch,
        image_size=SCALE.data_image_size,
        augment=dataset,
        normalize="imagenet",
        num_threads=SCALE.data_threads,
        **options,
    )
    epoch = iter(range(10**6))

    images = len(loader) * SCALE.data_batch  # drop_last: full batches only

    classes = len(samples.class_names)

    def run_epoch() -> None:
        loader.set_epoch(next(epoch))
        n = 0
        for x, y in loader:
            x, y = x.to(SCALE.device, non_blocking=True), y.to(SCALE.device, non_blocking=True)  # dali-cpu: a copy
            check_batch(x, y, classes)
            n += y.numel()
        sync()
        assert n == images > 0

    if not benchmark.disabled:
        run_epoch()  # warm-up: DALI builds its pipeline, the DataLoader starts its workers
    benchmark.group = f"input pipeline {dataset} train {SCALE.data_image_size}px"
    benchmark.extra_info.update(
        {
            "table": "input pipelines",
            "variant": loader_name,
            "baseline": "torch",
            "dataset": dataset,
            "images_per_epoch": images,
            "batch": SCALE.data_batch,
            "image_size": SCALE.data_image_size,
            "threads": SCALE.data_threads,
            "device": str(options["device"]),
        }
    )
    benchmark.pedantic(run_epoch, rounds=SCALE.data_rounds, iterations=1)
    med = median_s(benchmark)
    if med is not None:
        benchmark.extra_info["images_per_s"] = images / med


@pytest.mark.parametrize("bench_device", ["cpu", "cuda"])
def test_dali_cpu_row_builds_the_cpu_pipeline(train_splits: dict[str, SampleSet], bench_device: str) -> None:
    """The "dali-cpu" row runs DALI's CPU operators whatever the benchmark device (on CUDA it used to get the
    GPU pipeline, a copy of "dali-gpu"); "dali-gpu" gets the GPU ones. Builds the loaders, no GPU needed."""
    if not dali_available():
        pytest.skip("nvidia-dali is not installed")
    from train.data.dali_loader import DaliLoader

    options = loader_options("dali-cpu", torch.device(bench_device))
    loader = build_loader(
        train_splits["rafdb"], train=True, batch_size=4, image_size=32, augment="rafdb", num_threads=1, **options
    )
    assert isinstance(loader, DaliLoader)
    assert loader.device == torch.device("cpu") and loader._kw["gpu"] is False  # the operators' device
    assert loader._pipe_kw["device_id"] is None
    assert loader_options("dali-gpu", torch.device(bench_device))["device"] == torch.device("cuda")
    assert loader_options("torch", torch.device(bench_device))["device"] == torch.device(bench_device)


AFFECTNET_ROWS = 50_000


@pytest.fixture(scope="session")
def affectnet_csv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str]]:
    """An official-format training.csv of AFFECTNET_ROWS rows (the release's 136-value landmark column) and
    the set of its image names (no image files: the reader only looks names up)."""
    path = tmp_path_factory.mktemp("affectnet") / "training.csv"
    landmarks = ";".join(f"{50 + (7.31 * i) % 400:.2f}" for i in range(136))
    rels = [f"{i % 1300}/{i:056x}.jpg" for i in range(AFFECTNET_ROWS)]
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
    rows = (
        f"{r},{i % 50},{i % 40},{200 + i % 700},{200 + i % 700},{landmarks},{i % 11},0.25,-0.5"
        for i, r in enumerate(rels)
    )
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path, set(rels)


def test_affectnet_csv_read(benchmark, affectnet_csv: tuple[Path, set[str]]) -> None:
    """read_affectnet_csv in rows per second (file in the page cache; the 1M-row figure is in docs)."""
    from train.data.affectnet import read_affectnet_csv

    path, existing = affectnet_csv
    benchmark.group = f"AffectNet CSV read, {AFFECTNET_ROWS} rows"
    benchmark.extra_info.update({"table": "data-set readers", "variant": "vectorised", "baseline": "vectorised"})
    out = benchmark.pedantic(
        read_affectnet_csv, args=(path, path.parent, 8, existing), rounds=SCALE.data_rounds, iterations=1
    )
    assert len(out) == sum(1 for i in range(AFFECTNET_ROWS) if i % 11 < 8) and out.skipped == 0
    med = median_s(benchmark)
    if med is not None:
        benchmark.extra_info["rows_per_s"] = AFFECTNET_ROWS / med
