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

from train.distributed import DistEnv, all_reduce_sum


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


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    env: DistEnv,
    num_classes: int,
    autocast: Callable[[], Any] = contextlib.nullcontext,
    channels_last: bool = False,
) -> EvalResult:
    """Plain evaluation (one view per image): summed cross entropy, accuracy and confusion matrix."""
    model.eval()
    device = env.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    start = time.perf_counter()
    for x, y in loader:
        with autocast():
            logits = model(_prepare(x, channels_last))
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        confusion += torch.bincount(y * num_classes + logits.argmax(1), minlength=num_classes * num_classes)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return _reduce(loss_sum, confusion.view(num_classes, num_classes), env, seconds, device)


@torch.no_grad()
def evaluate_tta(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    env: DistEnv,
    num_classes: int,
    autocast: Callable[[], Any] = contextlib.nullcontext,
    channels_last: bool = False,
) -> EvalResult:
    """TTA: the loader yields V x N x 3 x S x S views; prediction = argmax of the softmax summed over views.

    The reported loss is the cross entropy of the mean softmax.
    """
    model.eval()
    device = env.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    start = time.perf_counter()
    for views, y in loader:
        probs = torch.zeros(views.shape[1], num_classes, dtype=torch.float32, device=device)
        for v in range(views.shape[0]):
            with autocast():
                logits = model(_prepare(views[v], channels_last))
            probs += logits.float().softmax(dim=1)
        mean = probs / views.shape[0]
        loss_sum += F.nll_loss(mean.clamp_min(1e-12).log(), y, reduction="sum").double()
        confusion += torch.bincount(y * num_classes + probs.argmax(1), minlength=num_classes * num_classes)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return _reduce(loss_sum, confusion.view(num_classes, num_classes), env, seconds, device)


def evaluate_all(
    model: nn.Module, loaders: dict[str, Any], tta: bool, **kw: Any
) -> tuple[EvalResult, EvalResult | None]:
    """(plain test result, TTA test result or None without --tta) from the "test" and "tta" loaders."""
    test = evaluate(model, loaders["test"], **kw)
    return test, (evaluate_tta(model, loaders["tta"], **kw) if tta else None)
