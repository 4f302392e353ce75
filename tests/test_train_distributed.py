"""torchrun with 2 CPU processes (gloo on 127.0.0.1): the run completes and the ranks see disjoint data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ddp_launch import torchrun

from train import checkpoint

ROOT = Path(__file__).resolve().parents[1]


def test_two_process_gloo_run_shards_the_data(tmp_path) -> None:
    out, seen = tmp_path / "run", tmp_path / "seen"
    args = [
        "-m", "train.run",
        "--model", "resnet18", "--image-size", "32", "--batch-size", "6", "--epochs", "1",
        "--synthetic-train", "48", "--synthetic-val", "14", "--synthetic-test", "15",
        "--data-root", str(tmp_path / "data"), "--out", str(out), "--loader", "torch", "--num-workers", "0",
        "--augment", "none", "--no-tta", "--no-progress", "--device", "cpu", "--threads", "1",
        "--debug-seen", str(seen),
        # the modern recipe (SAM, RandomErasing) with every other method on: EMA evaluated and selected on
        # rank 0's reduced accuracy, mixup/cutmix, label smoothing, the cosine schedule
        "--recipe", "synthetic-modern", "--ema", "0.9", "--mixup", "0.2", "--cutmix", "1.0",
        "--label-smoothing", "0.1", "--scheduler", "cosine",
    ]  # fmt: skip
    p = torchrun(*args)
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
    assert ckpt["ema"] is not None and ckpt["ema"].keys() == ckpt["model"].keys()
    assert ckpt["best_weights"] in ("raw", "ema")
    (row,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert 0 <= row["val_acc_ema"] <= 100  # the EMA evaluated over both ranks' shards


def test_two_process_affectnet_official_with_skip_bad(tmp_path) -> None:
    """A new layout under torchrun: AffectNet's official release (face boxes cropped by the loaders), rank
    shards disjoint, and a training JPEG that is truncated counted once over both ranks with --skip-bad
    (the stand-in keeps both ranks at the same number of steps)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from layout_files import make_affectnet_official, truncate

    root = make_affectnet_official(tmp_path / "an", per_class=4, image_size=32)  # train: 7 classes x 4
    bad = truncate(root / "Manually_Annotated_Images" / "t3" / "img_3_1.jpg")
    out, seen = tmp_path / "run", tmp_path / "seen"
    args = [
        "-m", "train.run", "--recipe", "affectnet7", "--data-root", str(root), "--holdout", "0", "--skip-bad",
        "--model", "resnet18", "--image-size", "32", "--batch-size", "7", "--epochs", "1", "--no-memory-estimate",
        "--out", str(out), "--loader", "torch", "--num-workers", "0",
        "--augment", "none", "--no-tta", "--no-progress", "--device", "cpu", "--threads", "1",
        "--debug-seen", str(seen),
    ]  # fmt: skip
    p = torchrun(*args, env={"DDAKERN_CACHE": str(tmp_path / "cache")})
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("report:") == 1
    assert p.stderr.count("epoch 1: --skip-bad: 1 bad file(s) skipped so far (1 sample(s)): ") == 1, p.stderr[-3000:]
    ids = []
    for rank in (0, 1):
        lines = Path(f"{seen}.rank{rank}").read_text(encoding="utf-8").split("\n")
        ids.append([line.split()[1] for line in lines if line])
    # 28 training rows / 2 ranks = 2 batches of 7 each; the bad file's stand-in repeats a sample of its batch
    assert len(ids[0]) == len(ids[1]) == 14 and len(set(ids[0])) + len(set(ids[1])) == 27
    assert not set(ids[0]) & set(ids[1])
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["layout"] == "affectnet" and summary["world_size"] == 2 and summary["test"]["images"] == 28
    skipped = summary["data"]["skipped_during_training"]
    assert skipped["count"] == 1 and skipped["first"][0]["path"] == str(bad), skipped


def test_device_index_under_torchrun_and_past_the_last_gpu_is_one_line(monkeypatch) -> None:
    """`--device cuda:1` under torchrun put every rank on GPU 1 (NCCL: "Duplicate GPU detected"); a GPU index
    past the last was torch's "invalid device ordinal" at the first move. Both are refused at start-up, before
    any GPU is touched (a CUDA machine of 2 GPUs is simulated; nothing reaches CUDA)."""
    import pytest
    import torch

    from train import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: pytest.fail(f"set_device({d}) reached"))
    with pytest.raises(RuntimeError, match=r"--device cuda:2: this machine has 2 CUDA GPU\(s\), cuda:0 to cuda:1"):
        distributed.resolve_device("cuda:2")
    assert distributed.resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(RuntimeError, match="under torchrun would put every process on that one GPU"):
        distributed.setup("cuda:1")
