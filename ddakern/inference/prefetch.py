"""Overlapped prediction: decoding, detection and cropping run ahead in worker threads while the
calling thread classifies, and the faces of many images or frames share the classifier's batches.

OpenCV (detection, resizing, video decoding), PIL (decoding) and PyTorch release the GIL, so the
worker threads run in parallel with the classifier. At most `ahead` images are being prepared and at
most `hold` prepared images wait for their batch, so memory stays flat on long videos.

`StreamStats.wait_s` is the time the classifying thread spent waiting for prepared images and
`classify_s` the time it spent classifying (preprocessing the crops included). On CUDA the
classifier "never waits for the detector" when wait_s stays near zero beside classify_s once the
stream runs (the first image's wait, `first_wait_s`, is the pipeline filling up);
`bench/predict_speed.py` prints their ratio.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

T = TypeVar("T")
R = TypeVar("R")


class PreparedItem(Protocol):
    """What stream reads of a prepared item (predictor.Prepared): its faces (.., .., crop), skip, error."""

    faces: list[tuple[Any, Any, np.ndarray]]
    skip: bool
    error: Exception | None


P = TypeVar("P", bound=PreparedItem)


class Classifier(Protocol):
    """What stream calls on the classifier (predictor.Predictor); a protocol, so this module does not
    import the predictor that imports it."""

    batch_size: int

    def classify(self, crops: list[np.ndarray]) -> Any: ...

    def result(self, prepared: Any, probs: list[np.ndarray]) -> Any: ...


@dataclass
class StreamStats:
    """What a stream did and where its classifying thread spent its time (seconds)."""

    images: int = 0
    faces: int = 0
    batches: int = 0
    wait_s: float = 0.0  # blocked on workers (decode + detect + crop): the classifier waiting for the detector
    first_wait_s: float = 0.0  # the part of wait_s spent on the first image (pipeline filling up)
    classify_s: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)


def ordered(fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int) -> Iterator[Future[R]]:
    """Futures of fn(item), in the order of `items`; `workers` threads compute at most `ahead` in advance.

    `items` is iterated in the calling thread. Closing the iterator cancels what has not started.
    """
    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="ddakern-prepare")
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= max(1, ahead):
                yield pending.popleft()
        while pending:
            yield pending.popleft()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


def background(items: Iterable[T], depth: int = 8) -> Iterator[T]:
    """`items` iterated in a thread of its own, at most `depth` ahead (video decoding overlaps the rest).

    An exception of the iteration is raised here, in the consumer; closing this iterator stops the thread.
    """
    q: queue.Queue = queue.Queue(max(1, depth))
    stop = threading.Event()

    def put(x: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for x in items:
                if not put(x):
                    return
            put(_END)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put(_Raised(e))

    thread = threading.Thread(target=run, name="ddakern-read", daemon=True)
    thread.start()
    try:
        while True:
            x = q.get()
            if x is _END:
                return
            if isinstance(x, _Raised):
                raise x.error
            yield x
    finally:
        stop.set()
        thread.join()


def stream(
    pred: Classifier,
    items: Iterable[T],
    prepare: Callable[[T], P],
    *,
    workers: int,
    ahead: int | None = None,
    hold: int = 64,
    stats: StreamStats | None = None,
) -> Iterator[tuple[P, Any]]:
    """(prepared, ImageResult or None) per item, in order: `prepare` (decode, detect, crop) runs in
    `workers` threads, faces are classified in full batches of `pred.batch_size` across items.

    A prepared item with `skip` or an `error` gets None. Items wait for their batch until `hold`
    of them are waiting; then the partial batch is classified (bounded memory and latency).
    """
    stats = stats if stats is not None else StreamStats()
    bs = pred.batch_size
    ahead = ahead if ahead is not None else 2 * max(1, workers) + 2
    waiting: deque[P] = deque()  # prepared, in order, not yet emitted
    todo: list[np.ndarray] = []  # face crops not yet classified, in order
    rows: deque[np.ndarray] = deque()  # probabilities of classified faces not yet emitted, in order

    def classify(final: bool) -> None:
        take = len(todo) if final else (len(todo) // bs) * bs
        for start in range(0, take, bs):
            crops = todo[start : min(take, start + bs)]
            t = time.perf_counter()
            probs = pred.classify(crops)
            stats.classify_s += time.perf_counter() - t
            stats.batches += 1
            stats.batch_sizes.append(len(crops))
            rows.extend(probs)
        del todo[:take]

    def ready() -> Iterator[tuple[P, Any]]:
        while waiting and len(rows) >= len(waiting[0].faces):
            p = waiting.popleft()
            probs = [rows.popleft() for _ in p.faces]
            result = None if (p.skip or p.error is not None) else pred.result(p, probs)
            yield p, result

    futures = ordered(prepare, items, workers, ahead)
    try:
        for fut in futures:
            t = time.perf_counter()
            p = fut.result()
            waited = time.perf_counter() - t
            stats.wait_s += waited
            if stats.images == 0:
                stats.first_wait_s = waited
            stats.images += 1
            stats.faces += len(p.faces)
            waiting.append(p)
            todo.extend(c for _, _, c in p.faces)
            if len(todo) >= bs:
                classify(final=False)
            elif len(waiting) >= hold:
                classify(final=True)
            yield from ready()
        classify(final=True)
        yield from ready()
    finally:
        futures.close()
