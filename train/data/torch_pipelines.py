"""PyTorch DataLoader path: the recipe augmentations with torch functional ops (no torchvision needed).

Geometry mirrors the DALI pipelines: resize to image_size with bilinear, half-pixel centres
(`align_corners=False`) and no antialiasing (DALI's antialias filter differs from torch's by up to
~9/255 when shrinking, so both paths skip it; the recipes upscale, 48 or 100 -> 224, where it does not
apply); rotation about the centre with zero fill; zoom by resampling the centre crop with edge clamping;
grayscale with BT.601 luma. With augmentation off both paths decode the same JPEG bytes
(libjpeg-turbo) and agree to float rounding (measured < 1e-5 on the [0, 1] scale).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataError
from .image_io import CheckedReads, decode_rgb
from .loader_spec import LoaderSpec
from .recipes import LUMA, AugmentRecipe, norm_constants
from .samples import SampleSet
from .sharding import batch_count, shard_indices
from .skips import SkipLog, replacement


def load_image(samples: SampleSet, index: int, checked: CheckedReads | None = None) -> np.ndarray:
    """uint8 H x W (gray) or H x W x 3 (RGB) image `index` of `samples`; DataError names a bad file.

    checked (--skip-bad): a JPEG is checked strictly (image_io.strict_problem) when first read, so a damaged
    file is skipped rather than trained on as garbage, and both loaders skip the same files."""
    if samples.kind == "array":
        return samples.images[index]
    box = None if samples.boxes is None else samples.boxes[index]
    if checked is not None:
        return checked.decoded(index, samples.files[index], box)
    return decode_rgb(samples.files[index], box)


class BadSample(NamedTuple):
    """Stands in for a sample (or batch) that failed to load, so a worker process reports it in one line
    through the main process instead of a worker traceback."""

    message: str


class Loaded(NamedTuple):
    """A batch's samples after --skip-bad (bad ones replaced or dropped) and the DataError lines of the
    skipped files, carried to the main process where the loader counts them."""

    items: list
    skipped: list[str]


def collate(batch: list | Loaded) -> tuple[torch.Tensor | None, torch.Tensor | None, list[str]] | BadSample:
    """(images, labels, skipped lines) by torch's default collation (None, None when --skip-bad dropped
    every sample), or the first BadSample of the batch."""
    skipped: list[str] = []
    if isinstance(batch, Loaded):
        batch, skipped = batch.items, batch.skipped
    for item in batch:
        if isinstance(item, BadSample):
            return item
    if not batch:
        return None, None, skipped
    x, y = torch.utils.data.default_collate(batch)
    return x, y, skipped


def _affine(x: torch.Tensor, theta: list[list[float]], padding: str) -> torch.Tensor:
    t = torch.tensor([theta], dtype=x.dtype)
    grid = F.affine_grid(t, [1, *x.shape], align_corners=False)
    return F.grid_sample(x[None], grid, mode="bilinear", padding_mode=padding, align_corners=False)[0]


def rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """C x H x W rotated about its centre by `degrees`, keeping the size, zero fill, bilinear."""
    a = math.radians(degrees)
    h, w = x.shape[-2:]
    c, s = math.cos(a), math.sin(a)
    # grids are in normalised coordinates; correct the aspect ratio for non-square images
    return _affine(x, [[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], "zeros")


def zoom(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Scale C x H x W up by `scale` about the centre and crop back to H x W (bilinear, edges clamped)."""
    return _affine(x, [[1.0 / scale, 0.0, 0.0], [0.0, 1.0 / scale, 0.0]], "border")


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """3 x H x W RGB -> 3 x H x W gray (BT.601 luma replicated); 1-channel input is returned as is."""
    if x.shape[0] == 1:
        return x
    y = LUMA[0] * x[0] + LUMA[1] * x[1] + LUMA[2] * x[2]
    return y[None].expand(3, -1, -1)


def transform(
    image: np.ndarray,
    *,
    image_size: int,
    recipe: AugmentRecipe | None,
    rng: np.random.Generator,
    mean: torch.Tensor,
    std: torch.Tensor,
    branch: int | None = None,
) -> torch.Tensor:
    """One sample: uint8 image -> float32 3 x S x S, augmented with `recipe` and normalised.

    branch: force augmentation branch 1 or 2 (TTA); None draws it with the recipe's probability.
    """
    x = torch.tensor(image, dtype=torch.float32)
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
    x = F.interpolate(x[None], size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=False)[0]
    if recipe is not None:
        if branch is None:
            branch = 1 if rng.random() < recipe.p_branch else 2
        if branch == 1:
            if rng.random() < recipe.p_flip:
                x = x.flip(-1)
            x = rotate(x, rng.uniform(-recipe.degrees, recipe.degrees))
        else:
            if recipe.gray:
                x = to_gray(x)
            x = zoom(x, rng.uniform(1.0, recipe.max_scale))
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return ((x - mean) / std).contiguous()


class SampleDataset(torch.utils.data.Dataset):
    """Items are addressed by (index, epoch) so per-sample randomness is seeded by (seed, epoch, index)."""

    def __init__(
        self,
        samples: SampleSet,
        *,
        image_size: int,
        recipe: AugmentRecipe | None,
        normalize: str,
        seed: int,
        views: int = 0,
        skip_bad: bool = False,
        replace: bool = False,
    ) -> None:
        """skip_bad: skip bad files (see __getitems__); replace: stand-ins instead of drops (training)."""
        mean, std = norm_constants(normalize)
        self.skip_bad, self.replace = skip_bad, replace
        self.checked = CheckedReads(len(samples)) if skip_bad and samples.kind == "files" else None
        self.samples, self.image_size, self.recipe, self.seed, self.views = (
            samples,
            image_size,
            recipe,
            seed,
            views,
        )
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def _sample(self, image: np.ndarray, label: int, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, epoch = key
        rng = np.random.default_rng([self.seed, epoch, index])
        kw = dict(image_size=self.image_size, recipe=self.recipe, rng=rng, mean=self.mean, std=self.std)
        if self.views:
            first = (self.views + 1) // 2
            x = torch.stack([transform(image, branch=1 if v < first else 2, **kw) for v in range(self.views)])
        else:
            x = transform(image, **kw)
        return x, int(label)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int] | BadSample:
        index, _ = key
        try:
            image = load_image(self.samples, index, self.checked)
        except DataError as e:
            return BadSample(str(e))
        return self._sample(image, self.samples.labels[index], key)

    def __getitems__(self, keys: list[tuple[int, int]]) -> list | Loaded:
        """One batch. --skip-bad: a bad file is replaced (training: skips.replacement's stand-in, with the
        bad sample's own augmentation draw) or dropped (evaluation), and reported in Loaded.skipped."""
        if not self.skip_bad:
            return [self[k] for k in keys]
        skipped: list[str] = []

        def attempt(index: int) -> tuple[int, np.ndarray] | None:
            try:
                return index, load_image(self.samples, index, self.checked)
            except DataError as e:
                skipped.append(str(e))
                return None

        loaded = [attempt(index) for index, _ in keys]
        items = []
        for k, (key, got) in enumerate(zip(keys, loaded)):
            if got is None and not self.replace:
                continue
            if got is None:
                got = replacement(loaded, k, lambda j, i=key[0]: attempt((i + j) % len(self.samples)))
            index, image = got
            items.append(self._sample(image, self.samples.labels[index], key))
        return Loaded(items, skipped)


class _BatchSampler:
    """Batches of (index, epoch) keys for one rank; the owner sets `epoch` before each pass."""

    def __init__(self, n: int, batch_size: int, shard: dict) -> None:
        self.n, self.batch_size, self.shard, self.epoch = n, batch_size, shard, 0

    def _order(self) -> np.ndarray:
        return shard_indices(self.n, epoch=self.epoch, **self.shard)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = self._order()
        stop = len(self) * self.batch_size
        for start in range(0, min(stop, order.size), self.batch_size):
            yield [(int(i), self.epoch) for i in order[start : start + self.batch_size]]

    def __len__(self) -> int:
        return batch_count(self._order().size, self.batch_size, self.shard["drop_last"])


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


class TorchLoader:
    """Re-iterable loader over a SampleSet: `set_epoch`, `len()` and (images, labels) batches on `device`.

    images: float32 N x 3 x S x S, or V x N x 3 x S x S for TTA (views > 0); labels: int64 N.
    num_threads > 1 uses that many persistent worker processes, otherwise loading runs in-process.
    `skips`: the bad files skipped so far with --skip-bad (skips.SkipLog).
    """

    def __init__(self, samples: SampleSet, spec: LoaderSpec) -> None:
        self.device, self.views = spec.device, spec.views
        rank, world_size, seed, train = spec.rank, spec.world_size, spec.seed, spec.train
        drop_last, batch_size, views = spec.drop_last, spec.batch_size, spec.views
        shard = dict(rank=rank, world_size=world_size, seed=seed, shuffle=train, equal=train, drop_last=drop_last)
        shard["labels"] = samples.labels if spec.balanced and train else None
        self.sampler = _BatchSampler(len(samples), batch_size, shard)
        dataset = SampleDataset(
            samples,
            image_size=spec.image_size,
            recipe=spec.recipe,
            normalize=spec.normalize,
            seed=seed,
            views=views,
            skip_bad=spec.skip_bad,
            replace=train,
        )
        self.skips = SkipLog()
        workers = spec.num_threads if spec.num_threads > 1 else 0
        self.loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=self.sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            worker_init_fn=_worker_init if workers else None,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle order and augmentation randomness of `epoch`."""
        self.sampler.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        try:
            for batch in self.loader:
                if isinstance(batch, BadSample):
                    raise DataError(batch.message)
                x, y, skipped = batch
                for message in skipped:
                    self.skips.record(message)
                if x is None:  # evaluation batch whose every file was bad
                    continue
                if self.views:
                    x = x.transpose(0, 1)
                yield x.to(self.device, non_blocking=True), y.to(self.device, torch.int64, non_blocking=True)
        except Exception:
            self._stop_workers()
            raise

    def _stop_workers(self) -> None:
        """Stop the persistent worker processes now. Left to the garbage collector (the error's traceback
        keeps the loader in a reference cycle), DataLoader's own shutdown ran after the collector had taken
        its queues apart, and waited 5 s for each worker to exit on a signal it never got."""
        iterator = getattr(self.loader, "_iterator", None)  # persistent workers' iterator (torch keeps it there)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
            self.loader._iterator = None  # a later pass starts new workers
