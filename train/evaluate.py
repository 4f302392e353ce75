"""Evaluation with and without test-time augmentation, reduced over all ranks."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .distributed import DistEnv, all_reduce_sum


@dataclass
class EvalResult:
    """Sums over the whole split (all ranks): loss, correct, total, confusion (true x predicted)."""

    loss_sum: float
    correct: int
    total: int
    confusion: np.ndarray
    seconds: float

    @property
    def accuracy(self) -> float:
        """Accuracy in percent."""
        return 100.0 * self.correct / max(self.total, 1)

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.total, 1)

    @property
    def images_per_s(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0

    def per_class_accuracy(self, class_names: Iterable[str]) -> dict[str, float | None]:
        """Accuracy (%) per true class; None for a class without samples."""
        out: dict[str, float | None] = {}
        for i, name in enumerate(class_names):
            n = int(self.confusion[i].sum())
            out[name] = 100.0 * float(self.confusion[i, i]) / n if n else None
        return out


def _reduce(
    loss_sum: torch.Tensor, confusion: torch.Tensor, env: DistEnv, seconds: float, device: torch.device
) -> EvalResult:
    packed = torch.cat([loss_sum.reshape(1).double(), confusion.reshape(-1).double()]).to(device)
    all_reduce_sum(packed, env)
    packed = packed.cpu()
    conf = packed[1:].round().long().reshape(confusion.shape).numpy()
    return EvalResult(float(packed[0]), int(np.trace(conf)), int(conf.sum()), conf, seconds)


def _prepare(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _score_views(
    model: nn.Module, autocast: Callable[[], Any], channels_last: bool
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """TTA scoring: V x N x 3 x S x S views -> (cross entropy of the mean softmax, argmax of the summed softmax)."""

    def score(views: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = None
        for v in range(views.shape[0]):
            with autocast():
                logits = model(_prepare(views[v], channels_last))
            p = logits.float().softmax(dim=1)
            probs = p if probs is None else probs + p
        mean = probs / views.shape[0]
        return F.nll_loss(mean.clamp_min(1e-12).log(), y, reduction="sum"), probs.argmax(1)

    return score


def _score_plain(
    model: nn.Module, autocast: Callable[[], Any], channels_last: bool
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Plain scoring: one view per image -> (summed cross entropy, argmax of the logits)."""

    def score(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast():
            logits = model(_prepare(x, channels_last))
        logits = logits.float()
        return F.cross_entropy(logits, y, reduction="sum"), logits.argmax(1)

    return score


def confusion_counts(y: torch.Tensor, pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Flat (true x predicted) counts of one batch, num_classes**2 int64, computed on the device.

    A broadcast comparison rather than torch.bincount: on CUDA bincount reads the input's min and max
    on the host (two syncs a batch) to size its output.
    """
    bins = torch.arange(num_classes * num_classes, device=y.device)
    return ((y * num_classes + pred).unsqueeze(1) == bins).sum(0)


def add_batch(
    score: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    x: torch.Tensor,
    y: torch.Tensor,
    loss_sum: torch.Tensor,
    confusion: torch.Tensor,
    num_classes: int,
) -> None:
    """Score one batch into the running sums, in place and on the device: no host-device sync."""
    loss, pred = score(x, y)
    loss_sum += loss.double()
    confusion += confusion_counts(y, pred, num_classes)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    env: DistEnv,
    num_classes: int,
    autocast: Callable[[], Any] = contextlib.nullcontext,
    channels_last: bool = False,
    tta: bool = False,
) -> EvalResult:
    """Summed loss, accuracy and confusion matrix over the split (all ranks).

    Plain: one view per image, cross entropy. `tta`: the loader yields V x N x 3 x S x S views; the
    prediction is the argmax of the softmax summed over views, the loss the cross entropy of the mean softmax.
    """
    model.eval()
    device = env.device
    score = (_score_views if tta else _score_plain)(model, autocast, channels_last)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    start = time.perf_counter()
    for x, y in loader:
        add_batch(score, x, y, loss_sum, confusion, num_classes)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return _reduce(loss_sum, confusion.view(num_classes, num_classes), env, seconds, device)


def evaluate_tta(model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], **kw: Any) -> EvalResult:
    """`evaluate` with test-time augmentation views (see there)."""
    return evaluate(model, loader, tta=True, **kw)


def evaluate_all(
    model: nn.Module, loaders: dict[str, Any], tta: bool, **kw: Any
) -> tuple[EvalResult, EvalResult | None]:
    """(plain test result, TTA test result or None without --tta) from the "test" and "tta" loaders."""
    test = evaluate(model, loaders["test"], **kw)
    return test, (evaluate_tta(model, loaders["tta"], **kw) if tta else None)
