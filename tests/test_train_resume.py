"""SIGTERM mid-epoch + `--resume auto` ends with bitwise the same state as an uninterrupted run.

The interrupted run is a process (it gets the signal); the uninterrupted reference and the resume run in
the test process (tests/inprocess.py: each `python -m train.run` would spend about 5 CPU-seconds on
imports), the reference while the interrupted process runs up to its wait.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from inprocess import run_main

from train import checkpoint
from train import run as train_run
from train.data import dali_available

ROOT = Path(__file__).resolve().parents[1]
# 84 / 12 = 7 steps per epoch; dropout and augmentation on so that every RNG stream matters
TINY = [
    "--model", "resnet18", "--image-size", "32", "--batch-size", "12", "--epochs", "2", "--lr", "2e-3",
    "--synthetic-train", "84", "--synthetic-val", "14", "--synthetic-test", "14", "--augment", "fer2013",
    "--tta-views", "2", "--num-workers", "0", "--no-progress", "--device", "cpu", "--threads", "1",
]  # fmt: skip
# --threads 1: the uninterrupted reference runs alongside the interrupted process, one core each


def run(args: list[str], **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "train.run", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def finish(p: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def wait_then_interrupt(p: subprocess.Popen, out: Path, wait_step: int) -> None:
    """Wait for the run's 'debug-wait' line, SIGTERM it, check that it saved the step after the signal."""
    deadline = time.monotonic() + 240
    line = ""
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if line.startswith("debug-wait") or not line:
            break
    assert line.strip() == f"debug-wait {wait_step}", (line, p.stderr.read() if p.poll() is not None else "")
    p.send_signal(signal.SIGTERM)
    rc, _, err = finish(p)
    assert rc == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "--resume" in err
    saved = checkpoint.load(out / "last.pt")
    # the step after the signal completes, then the run saves: epoch index 1, 3 batches done
    assert (saved["epoch"], saved["step"], saved["global_step"]) == (1, wait_step - 7 + 1, wait_step + 1)


def assert_same_final_state(a: Path, b: Path) -> None:
    ca, cb = checkpoint.load(a / "last.pt"), checkpoint.load(b / "last.pt")
    assert ca["global_step"] == cb["global_step"] == 14
    assert ca["model"].keys() == cb["model"].keys()
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k
    sa, sb = ca["optimizer"]["state"], cb["optimizer"]["state"]
    for i in sa:
        for k in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), (i, k)
    assert ca["scheduler"] == cb["scheduler"]
    keys = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")
    rows_a = [json.loads(r) for r in (a / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(r) for r in (b / "metrics.jsonl").read_text().splitlines()]
    assert [[r[k] for k in keys] for r in rows_a] == [[r[k] for k in keys] for r in rows_b]
    sum_a = json.loads((a / "summary.json").read_text())
    sum_b = json.loads((b / "summary.json").read_text())
    assert sum_a["test_accuracy_tta"] == sum_b["test_accuracy_tta"]


@pytest.mark.parametrize("loader", ["torch", "dali"])
def test_sigterm_then_resume_matches_uninterrupted(loader, tmp_path_factory, capfd) -> None:
    if loader == "dali" and not dali_available():
        pytest.skip("nvidia-dali is not installed")
    data = tmp_path_factory.mktemp("synthetic")
    args = [*TINY, "--loader", loader, "--data-root", str(data)]
    a, b = tmp_path_factory.mktemp("straight"), tmp_path_factory.mktemp("resumed")
    wait_step = 9
    interrupted = run([*args, "--out", str(b), "--debug-wait-at-step", str(wait_step)])
    rc, _, err = run_main(train_run.main, [*args, "--out", str(a)], capfd)  # uninterrupted reference
    assert rc == 0, err
    wait_then_interrupt(interrupted, b, wait_step)
    rc, stdout, err = run_main(train_run.main, ["--resume", "auto", "--out", str(b)], capfd)
    assert rc == 0, err
    assert "resumed from" in err and "report:" in stdout
    assert_same_final_state(a, b)
