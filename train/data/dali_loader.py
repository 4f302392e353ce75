"""The epoch loop around the DALI pipelines: lazy build, sharding, `set_epoch`, `len()`, device transfer."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import numpy as np
import torch

from .errors import DataError
from .image_io import CheckedReads, decode_rgb, read_encoded
from .imagecheck import file_problem
from .loader_spec import LoaderSpec
from .recipes import norm_constants
from .samples import SampleSet
from .sharding import batch_count, shard_indices
from .skips import SkipLog, replacement


class _BatchSource:
    """Iterable of (data, labels) batches for fn.external_source: decoded arrays, or the encoded bytes of
    JPEG files. Each pass reads the owner's epoch lazily (DALI calls iter() as soon as the previous pass
    ends, before the next set_epoch).

    skip_bad: every file is checked strictly before DALI sees it (a decoder error inside the pipeline
    would end the whole pass, with no way to drop one sample); a bad one is replaced (`replace`, training:
    see skips.replacement) or dropped (evaluation) and recorded in `skips`.
    """

    def __init__(
        self, samples: SampleSet, batch_size: int, shard: dict, skip_bad: bool = False, replace: bool = False
    ) -> None:
        self.samples, self.batch_size, self.shard, self.epoch = samples, batch_size, shard, 0
        self.skip_bad, self.replace, self.skips = skip_bad, replace, SkipLog()
        self.checked = CheckedReads(len(samples)) if skip_bad and samples.kind == "files" else None
        self.recent: deque[np.ndarray] = deque(maxlen=4)  # batches handed to DALI, newest last (prefetch)
        if samples.kind == "array":
            self.images = samples.images if samples.images.ndim == 4 else samples.images[..., None]

    def order(self) -> np.ndarray:
        return shard_indices(len(self.samples), epoch=self.epoch, **self.shard)

    def _item(self, i: int) -> np.ndarray:
        if self.samples.kind == "array":
            return self.images[i]
        path = self.samples.files[i]
        if self.samples.boxes is not None:  # face boxes (AffectNet): decoded and cropped here, fed as arrays
            box = self.samples.boxes[i]
            return self.checked.decoded(i, path, box) if self.checked else decode_rgb(path, box)
        # names a missing or truncated file (DALI's decoder error would not); --skip-bad: any bad file
        return self.checked.encoded(i, path) if self.checked else read_encoded(path)

    def _attempt(self, i: int) -> tuple[int, np.ndarray] | None:
        try:
            return i, self._item(i)
        except DataError as e:
            self.skips.record(str(e))
            return None

    def _checked(self, idx: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """(index, data) of the batch `idx` with bad files replaced (training) or dropped (evaluation)."""
        loaded = [self._attempt(int(i)) for i in idx]
        if not self.replace:  # evaluation
            return [got for got in loaded if got is not None]
        n = len(self.samples)
        return [
            got if got is not None else replacement(loaded, k, lambda j, i=int(i): self._attempt((i + j) % n))
            for k, (i, got) in enumerate(zip(idx, loaded))
        ]

    def __iter__(self) -> Iterator[tuple[list[np.ndarray], list[np.ndarray]]]:
        order = self.order()
        stop = min(order.size, batch_count(order.size, self.batch_size, self.shard["drop_last"]) * self.batch_size)
        labels = self.samples.labels
        for start in range(0, stop, self.batch_size):
            idx = order[start : start + self.batch_size]
            self.recent.append(idx)
            if not self.skip_bad:
                yield [self._item(i) for i in idx], [labels[i : i + 1] for i in idx]
                continue
            batch = self._checked(idx)
            if batch:  # an evaluation batch whose every file was bad is left out
                yield [data for _, data in batch], [labels[i : i + 1] for i, _ in batch]


class DaliLoader:
    """Re-iterable DALI loader yielding (images, labels) on `device`; see `train.data.build_loader`.

    Evaluation shards are contiguous, disjoint and cover the set (as fn.readers.file's would). Training
    sets and array sets are fed by fn.external_source with this package's sharding (`train.data.sharding`):
    the same per-epoch permutation (seed, epoch) and rank shards as the PyTorch path. DALI's augmentation
    random streams continue from epoch to epoch (deterministic for a given seed when epochs run in order).
    """

    def __init__(self, samples: SampleSet, spec: LoaderSpec) -> None:
        if not 0 <= spec.rank < spec.world_size:
            raise ValueError(f"rank {spec.rank} outside world_size {spec.world_size}")
        train, batch_size, views, rank, world_size = spec.train, spec.batch_size, spec.views, spec.rank, spec.world_size
        self.samples, self.train, self.batch_size, self.views = samples, train, batch_size, views
        self.drop_last, self.device = spec.drop_last, spec.device
        self.rank, self.world_size, self.seed = rank, world_size, spec.seed
        mean, std = norm_constants(spec.normalize)
        gpu = self.device.type == "cuda"
        self._kw = dict(image_size=spec.image_size, recipe=spec.recipe, mean=mean, std=std, views=views, gpu=gpu)
        self._pipe_kw = dict(
            batch_size=batch_size,
            num_threads=max(1, spec.num_threads),
            device_id=(self.device.index if self.device.index is not None else torch.cuda.current_device())
            if gpu
            else None,
            seed=spec.seed + 1009 * rank,  # distinct augmentation streams per rank
        )
        # every set goes through external_source: _BatchSource checks each file and names a bad one
        # (readers.file's decode errors do not), and evaluation shards are contiguous as readers.file's
        shard = dict(
            rank=rank,
            world_size=world_size,
            seed=spec.seed,
            shuffle=train,
            equal=train,
            drop_last=self.drop_last,
            labels=samples.labels if spec.balanced and train else None,
        )
        self._source = _BatchSource(samples, batch_size, shard, spec.skip_bad, replace=train)
        self.skips = self._source.skips
        self._iterator = None
        self._finished = True
        self._epoch = 0

    def _build(self):
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        from . import dali_pipelines as dp

        outputs = [f"view{v}" for v in range(self.views)] if self.views else ["images"]
        encoded = self.samples.kind == "files" and self.samples.boxes is None
        color = self.samples.kind == "files" or self.samples.images.ndim == 4
        pipe = dp.source_pipeline(self._source, encoded=encoded, color=color, **self._kw, **self._pipe_kw)
        pipe.build()
        # the source ends each pass itself (a partial last batch for evaluation)
        return DALIGenericIterator(
            [pipe],
            outputs + ["labels"],
            last_batch_policy=LastBatchPolicy.PARTIAL,
            auto_reset=False,
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (the shuffle order of training sets)."""
        self._epoch = int(epoch)
        self._source.epoch = self._epoch

    def __len__(self) -> int:
        return batch_count(self._source.order().size, self.batch_size, self.drop_last)

    def _failure(self, error: RuntimeError) -> DataError:
        """One line for a pipeline failure: the undecodable file when one of the batches in flight has one."""
        if self.samples.kind == "files":
            for i in (int(i) for idx in self._source.recent for i in idx):
                path = self.samples.files[i]
                if (problem := file_problem(path)) is not None:
                    return DataError(f"{path}: {problem} (found by the DALI loader in epoch {self._epoch})")
        lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if ln.startswith(("Failed", "Error in"))), lines[-1] if lines else "")
        return DataError(f"DALI input pipeline failed in epoch {self._epoch}: {detail.rstrip(' :')}")

    def _next_batch(self):
        """The next DALI output (None at the end of the pass); a pipeline failure becomes one DataError."""
        try:
            if self._iterator is None:
                self._iterator = self._build()  # DALI's iterator runs the first batch while it is built
            return next(self._iterator)
        except StopIteration:
            return None
        except RuntimeError as e:  # a DALI pipeline that failed is no longer usable: rebuild next time
            self._iterator, self._finished = None, True
            raise self._failure(e) from None

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._iterator is not None:
            if not self._finished:  # the last pass was abandoned early: DALI can only reset at the end
                for _ in self._iterator:
                    pass
            self._iterator.reset()
        self._finished = False
        while (data := self._next_batch()) is not None:
            out = data[0]
            labels = out["labels"].reshape(-1)
            if labels.numel() == 0:
                continue
            if self.views:
                x = torch.stack([out[f"view{v}"] for v in range(self.views)])
            else:
                x = out["images"]
            yield x.to(self.device, non_blocking=True), labels.to(self.device, torch.int64, non_blocking=True)
        self._finished = True
