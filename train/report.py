"""Run-folder outputs: config.json, metrics.jsonl, summary.json, confusion_matrix.png, curves.png.

The summaries of `train.run` and `train.fuse` are built here (`run_summary`, `fusion_summary`) from one
common part, so both report the same fields under the same names.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ddakern.atomic import temp_path, write_text

if TYPE_CHECKING:
    from .checkpoint import State
    from .evaluate import EvalResult
    from .session import Session


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Pretty JSON, written atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_metrics(path: str | os.PathLike, history: Sequence[dict[str, Any]]) -> None:
    """metrics.jsonl: one JSON object per finished epoch (rewritten atomically from the history)."""
    write_text(path, "".join(json.dumps(row) + "\n" for row in history))


def peak_memory(device: torch.device) -> dict[str, Any]:
    """Peak memory in MiB: CUDA max_memory_allocated on GPU, max RSS of this process on CPU."""
    if device.type == "cuda":
        return {"kind": "cuda_max_memory_allocated", "mib": torch.cuda.max_memory_allocated(device) / 2**20}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    mib = rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux
    return {"kind": "cpu_max_rss", "mib": mib}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig: Any, path: Path) -> None:
    with temp_path(path, suffix=".png") as tmp:  # savefig picks the format from the suffix
        fig.savefig(tmp, dpi=110)


def plot_confusion(path: str | os.PathLike, matrix: np.ndarray, class_names: Sequence[str], title: str) -> None:
    """Row-normalised confusion matrix (rows: true class), each cell annotated with its count."""
    plt = _pyplot()
    counts = np.asarray(matrix, dtype=np.int64)
    rows = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=np.float64), where=rows > 0)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * n, 0.8 + 0.7 * n))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_xticks(range(n), labels=class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            color = "white" if norm[i, j] > 0.5 else "black"
            ax.text(j, i, f"{norm[i, j]:.2f}\n({counts[i, j]})", ha="center", va="center", color=color, fontsize=7)
    fig.tight_layout()
    _save_figure(fig, Path(path))
    plt.close(fig)


def plot_curves(path: str | os.PathLike, history: Sequence[dict[str, Any]]) -> None:
    """Loss and accuracy per epoch, train and validation."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    a1.plot(epochs, [r["val_loss"] for r in history], "s-", label="validation")
    a1.set_xlabel("epoch")
    a1.set_ylabel("cross-entropy loss")
    a1.legend()
    a2.plot(epochs, [r["train_acc"] for r in history], "o-", label="train")
    a2.plot(epochs, [r["val_acc"] for r in history], "s-", label="validation")
    a2.set_xlabel("epoch")
    a2.set_ylabel("accuracy (%)")
    a2.legend()
    from matplotlib.ticker import MaxNLocator

    for ax in (a1, a2):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    _save_figure(fig, Path(path))
    plt.close(fig)


def eval_result(r: EvalResult, class_names: Sequence[str]) -> dict[str, Any]:
    """One evaluation (plain or TTA) as summary.json shows it."""
    return {
        "accuracy": r.accuracy,
        "loss": r.loss,
        "images": r.total,
        "per_class_accuracy": r.per_class_accuracy(class_names),
        "confusion_matrix": r.confusion.tolist(),
        "images_per_s": r.images_per_s,
    }


def _common(
    session: Session, protocol: str, test: EvalResult, tta: EvalResult | None, names: Sequence[str]
) -> dict[str, Any]:
    """The fields every summary has (test results, data, loader actually used, memory, time, device)."""
    cfg, env = session.cfg, session.env
    return {
        "recipe": cfg.recipe,
        "protocol": protocol,
        "test_accuracy": test.accuracy,
        "test_accuracy_tta": None if tta is None else tta.accuracy,
        "test": eval_result(test, names),
        "test_tta": None if tta is None else eval_result(tta, names),
        "class_names": list(names),
        "loader": session.loader,
        "peak_memory": peak_memory(env.device),
        "wall_seconds": time.perf_counter() - session.started,
        "world_size": env.world_size,
        "device": str(env.device),
    }


def selected_on_test(history: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The published protocol beside the held-out one: the best per-epoch test accuracy and its epoch
    (None when the checkpoint was already selected on test, or no epoch has a test figure)."""
    figures = [
        (r[key], -r["epoch"], r["epoch"], weights)
        for r in history
        for key, weights in (("test_acc", "raw"), ("test_acc_ema", "ema"))
        if r.get(key) is not None
    ]
    if not figures:
        return None
    acc, _, epoch, weights = max(figures)  # the earliest epoch on a tie, raw before EMA
    out = {"test_accuracy": acc, "epoch": epoch, "tta": False}
    if weights == "ema" or any(r.get("test_acc_ema") is not None for r in history):
        out["weights"] = weights
    return out


def run_summary(
    session: Session,
    outcome: str,
    protocol: str,
    state: State,
    test: EvalResult,
    tta: EvalResult | None,
    names: Sequence[str],
    splits: dict[str, Any],
) -> dict[str, Any]:
    """summary.json of `train.run`."""
    cfg = session.cfg
    return {
        "status": outcome,
        "dataset": cfg.dataset,
        "model": cfg.model,
        "selected_epoch": state.best_epoch,
        "best_val_accuracy": state.best_metric,
        "epochs_run": len(state.history),
        "selected_on_test": selected_on_test(state.history),
        **_common(session, protocol, test, tta, names),
        "tta_views": cfg.tta_views if tta is not None else 0,
        "tta_augment": cfg.tta_views_recipe if tta is not None else None,
        "samples": {k: len(v) for k, v in splits.items()},
        "skipped_samples": {k: int(v.skipped) for k, v in splits.items()},
        "train_images_per_s": state.train_images / state.train_seconds if state.train_seconds > 0 else 0.0,
        "eval_images_per_s": test.images_per_s,
        "tta_images_per_s": None if tta is None else tta.images_per_s,
        "fused_ops": cfg.fused_ops,
        "ops_backend": cfg.ops_backend if cfg.fused_ops else None,
        "amp": cfg.amp,
        "checkpoint": str(session.out / "best.pt"),
    }


def fusion_summary(
    session: Session,
    protocol: str,
    meta: dict[str, Any],
    trained: bool,
    selected: int | None,
    test: EvalResult,
    tta: EvalResult | None,
    names: Sequence[str],
    members: list[dict[str, Any]],
) -> dict[str, Any]:
    """summary.json of `train.fuse`; `members`: each member's checkpoint, model and own accuracies."""
    return {
        "status": "completed",
        "method": meta["method"],
        "fusion_options": meta["options"],
        "trained": trained,
        "selected_epoch": selected,
        **_common(session, protocol, test, tta, names),
        "members": members,
    }


def write_outputs(out: Path, summary: dict[str, Any], shown: EvalResult, title: str, history: Sequence[dict]) -> None:
    """confusion_matrix.png (of `shown`), curves.png (when there is a history) and summary.json."""
    plot_confusion(out / "confusion_matrix.png", shown.confusion, summary["class_names"], title)
    if history:
        plot_curves(out / "curves.png", history)
    write_json(out / "summary.json", summary)
