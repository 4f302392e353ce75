"""DALI and PyTorch input pipelines: shapes, ranges, labels, agreement, augmentation, TTA, sharding."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from train.data import DataError, SampleSet, build_loader, build_tta_loader
from train.data import loaders as loaders_mod
from train.data.recipes import IMAGENET_MEAN, IMAGENET_STD, RECIPES
from train.data.sharding import shard_indices
from train.data.torch_pipelines import TorchLoader, transform

N = 10
S = 24  # output size: upscales the 12 px arrays and 16 px JPEGs, like 48/100 -> 224 in the recipes
BACKENDS = [
    "torch",
    pytest.param("dali", marks=pytest.mark.skipif(not loaders_mod.dali_available(), reason="no DALI")),
]


def _smooth(rng: np.random.Generator, size: int, channels: int) -> np.ndarray:
    """A random but smooth uint8 image (coarse noise, upsampled), so resizes are well behaved."""
    coarse = rng.integers(0, 256, (4, 4, channels), dtype=np.uint8)
    img = Image.fromarray(coarse.squeeze(-1) if channels == 1 else coarse).resize((size, size), Image.BILINEAR)
    return np.asarray(img)


@pytest.fixture(scope="module")
def gray_set() -> SampleSet:
    rng = np.random.default_rng(0)
    images = np.stack([_smooth(rng, 12, 1) for _ in range(N)])
    return SampleSet("array", images, None, np.arange(N), tuple(f"c{i}" for i in range(N)))


@pytest.fixture(scope="module")
def jpeg_set(tmp_path_factory: pytest.TempPathFactory) -> SampleSet:
    rng = np.random.default_rng(1)
    folder = tmp_path_factory.mktemp("jpegs")
    files = []
    for i in range(N):
        files.append(folder / f"train_{i:05d}_aligned.jpg")
        Image.fromarray(_smooth(rng, 16, 3)).save(files[-1], quality=95)
    return SampleSet("files", None, files, np.arange(N), tuple(f"c{i}" for i in range(N)))


def _collect(loader) -> tuple[torch.Tensor, torch.Tensor, int]:
    xs, ys, batches = [], [], 0
    for x, y in loader:
        xs.append(x)
        ys.append(y)
        batches += 1
    return torch.cat(xs, dim=-4), torch.cat(ys), batches


def _load(samples, **kw):
    args = dict(train=False, batch_size=4, image_size=S, augment=None, normalize="unit", loader="torch", num_threads=1)
    return build_loader(samples, **{**args, **kw})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["gray", "jpeg"])
def test_batches_shapes_ranges_labels(backend: str, kind: str, request: pytest.FixtureRequest) -> None:
    samples = request.getfixturevalue(f"{kind}_set")
    loader = _load(samples, loader=backend)
    x, y, batches = _collect(loader)
    assert batches == len(loader) == 3
    assert x.shape == (N, 3, S, S) and x.dtype == torch.float32 and x.device.type == "cpu"
    assert y.dtype == torch.int64 and y.tolist() == list(range(N))  # evaluation keeps order
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.05
    if kind == "gray":
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # replicated to 3 channels
    xi, _, _ = _collect(_load(samples, loader=backend, normalize="imagenet"))
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(xi, (x - mean) / std, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not loaders_mod.dali_available(), reason="no DALI")
@pytest.mark.parametrize("kind", ["gray", "jpeg"])
@pytest.mark.parametrize("size", [S, 10])
def test_dali_and_torch_agree_without_augmentation(kind: str, size: int, request: pytest.FixtureRequest) -> None:
    """Same decoder (libjpeg-turbo) and the same bilinear resize: equal to float rounding (tolerance 1e-5
    on the [0, 1] scale) when upscaling and when shrinking (both paths skip antialiasing)."""
    samples = request.getfixturevalue(f"{kind}_set")
    xd, yd, _ = _collect(_load(samples, loader="dali", image_size=size))
    xt, yt, _ = _collect(_load(samples, loader="torch", image_size=size))
    assert torch.equal(yd, yt)
    torch.testing.assert_close(xd, xt, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("recipe", ["fer2013", "rafdb"])
def test_augmentation_changes_images(backend: str, recipe: str, jpeg_set: SampleSet) -> None:
    clean, _, _ = _collect(_load(jpeg_set))
    loader = _load(jpeg_set, loader=backend, augment=recipe, train=True, batch_size=5)
    x, y, batches = _collect(loader)
    assert batches == len(loader) == 2 and sorted(y.tolist()) == list(range(N))  # shuffled, all seen
    diff = (x - clean[y]).abs().flatten(1).amax(1)
    assert (diff > 0.05).sum() >= N - 2  # nearly every sample was transformed (identity is unlikely)
    assert x.shape == (N, 3, S, S) and x.min() >= 0.0 and x.max() <= 1.0
    loader.set_epoch(1)
    x2, y2, _ = _collect(loader)
    assert not torch.equal(x2, x) and sorted(y2.tolist()) == list(range(N))


def test_torch_augmentation_is_seeded_per_epoch(gray_set: SampleSet) -> None:
    a = _load(gray_set, augment="fer2013", train=True)
    b = _load(gray_set, augment="fer2013", train=True)
    xa, ya, _ = _collect(a)
    xb, yb, _ = _collect(b)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    b.set_epoch(3)
    xc, yc, _ = _collect(b)
    assert not torch.equal(ya, yc)


def test_torch_worker_processes_follow_set_epoch(jpeg_set: SampleSet) -> None:
    inproc = _load(jpeg_set, augment="rafdb", train=True, batch_size=5)
    workers = _load(jpeg_set, augment="rafdb", train=True, batch_size=5, num_threads=2)
    for epoch in (0, 2):
        inproc.set_epoch(epoch)
        workers.set_epoch(epoch)
        xa, ya, _ = _collect(inproc)
        xb, yb, _ = _collect(workers)
        assert torch.equal(ya, yb) and torch.equal(xa, xb)


def test_torch_branches() -> None:
    rng = np.random.default_rng(0)
    img = _smooth(rng, 16, 3)
    mean, std = torch.zeros(3, 1, 1), torch.full((3, 1, 1), 255.0)
    kw = dict(image_size=16, rng=rng, mean=mean, std=std)
    gray = transform(img, recipe=RECIPES["rafdb"], branch=2, **kw)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    color = transform(img, recipe=RECIPES["fer2013"], branch=2, **kw)  # fer2013 branch 2 keeps colour
    assert not torch.equal(color[0], color[1])
    flat = np.full((16, 16, 3), 200, np.uint8)
    rotated = transform(flat, recipe=RECIPES["fer2013"], branch=1, **kw)
    assert rotated[:, 8, 8].min() > 0.78  # the centre stays, corners get the zero fill unless the angle is ~0
    assert rotated[:, 0, 0].max() < 0.78 or rotated[:, 15, 15].max() < 0.78


@pytest.mark.parametrize("backend", BACKENDS)
def test_tta_twenty_views(backend: str, jpeg_set: SampleSet) -> None:
    loader = build_tta_loader(
        jpeg_set,
        views=20,
        augment="rafdb",
        batch_size=4,
        image_size=S,
        normalize="unit",
        loader=backend,
        num_threads=1,
    )
    x, y, batches = _collect(loader)
    assert batches == len(loader) == 3
    assert x.shape == (20, N, 3, S, S) and y.tolist() == list(range(N))
    gray = (x[:, :, 0] - x[:, :, 1]).abs().flatten(1).amax(1) < 1e-3  # DALI hsv: ~4e-5 residual
    assert not gray[:10].any() and gray[10:].all()  # views 0-9 branch 1 (colour), 10-19 branch 2 (gray)
    clean, _, _ = _collect(_load(jpeg_set, loader=backend))
    assert ((x - clean).abs().flatten(2).amax(2) > 0.02).float().mean() > 0.9  # no clean view
    with pytest.raises(DataError, match="needs an augment recipe"):
        build_tta_loader(jpeg_set, augment=None, batch_size=4, image_size=S, loader=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["gray", "jpeg"])
def test_shards_disjoint_and_covering(backend: str, kind: str, request: pytest.FixtureRequest) -> None:
    samples = request.getfixturevalue(f"{kind}_set")
    world = 3
    seen = [
        _collect(_load(samples, loader=backend, rank=r, world_size=world, batch_size=2))[1].tolist()
        for r in range(world)
    ]
    assert sorted(sum(seen, [])) == list(range(N))  # evaluation: disjoint and covering
    for epoch in (0, 1):
        train = []
        for r in range(world):
            loader = _load(samples, loader=backend, rank=r, world_size=world, batch_size=1, train=True)
            loader.set_epoch(epoch)
            _, y, batches = _collect(loader)
            assert batches == len(loader) == N // world  # equal count on every rank
            train.append(y.tolist())
        flat = sum(train, [])
        assert len(set(flat)) == len(flat) == world * (N // world)  # disjoint within the epoch


def test_shard_indices_rules() -> None:
    kw = dict(world_size=4, epoch=0, seed=1)
    ev = [shard_indices(10, rank=r, shuffle=False, equal=False, drop_last=False, **kw) for r in range(4)]
    assert np.concatenate(ev).tolist() == list(range(10))
    pad = [shard_indices(10, rank=r, shuffle=True, equal=True, drop_last=False, **kw) for r in range(4)]
    assert all(p.size == 3 for p in pad) and set(np.concatenate(pad).tolist()) == set(range(10))
    with pytest.raises(ValueError, match="rank"):
        shard_indices(10, rank=4, shuffle=False, equal=False, drop_last=False, **kw)


@pytest.mark.skipif(not loaders_mod.dali_available(), reason="no DALI")
def test_dali_pass_abandoned_early_then_reiterated(gray_set: SampleSet) -> None:
    loader = _load(gray_set, loader="dali", batch_size=2)
    for _ in loader:
        break
    _, y, batches = _collect(loader)
    assert batches == len(loader) == 5 and y.tolist() == list(range(N))


def test_dali_missing_falls_back(monkeypatch: pytest.MonkeyPatch, caplog, gray_set: SampleSet) -> None:
    monkeypatch.setattr(loaders_mod, "dali_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="train.data"):
        loader = _load(gray_set, loader="dali")
    assert isinstance(loader, TorchLoader) and "using the PyTorch loader" in caplog.text
    with pytest.raises(DataError, match="unknown loader"):
        _load(gray_set, loader="jax")
    with pytest.raises(DataError, match="unknown normalize"):
        _load(gray_set, normalize="zscore")
    with pytest.raises(DataError, match="unknown augment"):
        _load(gray_set, augment="mixup")


def test_torch_decode_error_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0garbage")
    samples = SampleSet("files", None, [bad], np.array([0]), ("a",))
    with pytest.raises(DataError, match=r"broken\.jpg: cannot decode image"):
        _collect(_load(samples))


@pytest.mark.skipif(not loaders_mod.dali_available(), reason="no DALI")
@pytest.mark.parametrize("recipe", [None, "fer2013", "rafdb"])
@pytest.mark.parametrize("encoded,views", [(True, 0), (False, 0), (True, 2)])
def test_gpu_pipeline_graph_defines_without_a_gpu(recipe, encoded, views) -> None:
    """The GPU pipeline (mixed decode, GPU augmentation) is defined and serialised here, where no GPU can run
    it: its operators and arguments are checked before the first GPU run. nvJPEG decodes with libjpeg-turbo's
    chroma upsampling (jpeg_fancy_upsampling), so GPU training sees the pixels the CPU loaders and predict see."""
    from train.data import dali_pipelines as dp

    def graph(gpu: bool) -> bytes:
        pipe = dp.source_pipeline(
            iter([]), encoded=encoded, color=recipe != "rafdb", image_size=S, recipe=RECIPES.get(recipe),
            mean=IMAGENET_MEAN, std=IMAGENET_STD, views=views, gpu=gpu, batch_size=2, num_threads=1, device_id=None,
        )  # fmt: skip
        return pipe.serialize()

    gpu, cpu = graph(True), graph(False)
    assert (b"mixed" in gpu) is encoded and b"mixed" not in cpu
    assert (b"jpeg_fancy_upsampling" in gpu) is encoded and b"jpeg_fancy_upsampling" not in cpu
