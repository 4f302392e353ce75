"""torchrun with 2 CPU processes (gloo on 127.0.0.1): the run completes and the ranks see disjoint data."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from train import checkpoint

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_run_shards_the_data(tmp_path) -> None:
    out, seen = tmp_path / "run", tmp_path / "seen"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        "-m", "train.run",
        "--model", "resnet18", "--image-size", "32", "--batch-size", "6", "--epochs", "1",
        "--synthetic-train", "48", "--synthetic-val", "14", "--synthetic-test", "15",
        "--data-root", str(tmp_path / "data"), "--out", str(out), "--loader", "torch", "--num-workers", "0",
        "--augment", "none", "--no-tta", "--no-progress", "--device", "cpu", "--threads", "1",
        "--debug-seen", str(seen),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("report:") == 1  # rank 0 alone reports

    ids = []
    for rank in (0, 1):
        lines = Path(f"{seen}.rank{rank}").read_text(encoding="utf-8").split("\n")
        ids.append({line.split()[1] for line in lines if line})
    # 48 samples / 2 ranks = 24 per rank = 4 batches of 6; with augmentation off an image hash is a sample id
    assert len(ids[0]) == len(ids[1]) == 24
    assert not ids[0] & ids[1]

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["world_size"] == 2
    assert summary["test"]["images"] == 15  # evaluation shards (8 + 7) are reduced over both ranks
    assert sum(map(sum, summary["test"]["confusion_matrix"])) == 15
    ckpt = checkpoint.load(out / "last.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2 and ckpt["global_step"] == 4
    assert not any(k.startswith("module.") for k in ckpt["model"])
