"""--loader auto (timed on real DALI and PyTorch loaders over real JPEGs) and the class-balanced order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from layout_files import class_folders

from train.data import build_loader, dali_available
from train.data.balanced import balanced_order
from train.data.loader_choice import choose, choose_on_cpu, probe_subset
from train.data.scan import read_class_folders


def test_auto_on_cpu_times_both_loaders_on_the_data(tmp_path: Path) -> None:
    class_folders(tmp_path, ("angry", "happy"), 12, size=64)
    samples = probe_subset(read_class_folders(tmp_path, [("angry", "angry"), ("happy", "happy")]), batch_size=4)
    assert len(samples) == 16 and set(samples.labels.tolist()) == {0, 1}

    def make(name: str):
        return build_loader(samples, train=True, batch_size=4, image_size=32, augment="rafdb", loader=name)

    name, reason = choose("auto", cuda=False, dali=dali_available(), make=make)
    if dali_available():
        assert name in ("dali", "torch") and "measured" in reason and "images/s" in reason
    assert choose_on_cpu(make, dali=False) == ("torch", "auto on CPU: nvidia-dali not installed")
    assert choose("auto", cuda=True, dali=True, make=make)[0] == "dali"
    assert choose("dali", cuda=False, dali=False, make=make)[0] == "torch"
    assert choose("torch", cuda=True, dali=True, make=make) == ("torch", "--loader torch")


def test_balanced_order_evens_out_the_classes() -> None:
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    order = balanced_order(labels, seed=3, epoch=0)
    assert order.size == labels.size and order.min() >= 0 and order.max() < labels.size
    share = np.bincount(labels[order], minlength=3) / order.size
    assert np.all(np.abs(share - 1 / 3) < 0.06)
    assert np.array_equal(order, balanced_order(labels, seed=3, epoch=0))
    assert not np.array_equal(order, balanced_order(labels, seed=3, epoch=1))
