"""train.reproduce: the tables' cells, a tiny sweep end to end (killed after its first run and resumed),
the local executor's one run per GPU at a time, and the SLURM path through submitit's local executor."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from train import reproduce
from train.sweep import Job, Sweep, run_state, visible_gpus
from train.tables import STAGES, build_table, missing_weights

TINY = "--synthetic-train 42 --synthetic-val 21 --synthetic-test 21 --batch-size 14 --epochs 2 --image-size 32 "
TINY += "--no-memory-estimate --no-progress --dropout 0"
SMALL_MODEL = " --model resnet18 --dda-width none --dda-spatial-width none"
"""Appended to every run of the sweep test: the grid's cells stay the ablation's, each trains the smallest
host (a ResNet-34 + DDA checkpoint with its optimiser state is ~700 MB a save; the sweep is what is tested)."""


def test_ablation_main_fusion_and_modern_cells() -> None:
    ab = build_table("ablation", "rafdb")
    assert len(ab.cells) == 12 and ab.rows == tuple(STAGES) and ab.columns == ("ResNet-34", "ResNet-50")
    by = {(c.row, c.column): c for c in ab.cells}
    assert by[("none", "ResNet-50")].model == "resnet50"  # DDA in no stage: the plain host
    assert by[("2-4", "ResNet-34")].flags[-2:] == ("--dda-stages", "2,3,4")
    assert all(c.init == "imagenet" for c in ab.cells)
    assert all(c.init is None for c in build_table("ablation", "rafdb", scratch=True).cells)
    main = build_table("main", "rafdb")
    assert {(c.model, c.init) for c in main.cells if c.init == "vggface2"} == {
        ("resnet50", "vggface2"),
        ("resnet50_dda", "vggface2"),
    }
    fusion = build_table("fusion", "rafdb")
    members = [c for c in fusion.cells if c.kind == "run"]
    fuses = [c for c in fusion.cells if c.kind == "fuse"]
    assert len(fuses) == 5 * 4 and len(members) == 6  # ResNet-34 from ImageNet is shared by three pairs
    assert {c.flags[1] for c in fuses} == {"late", "early", "joint", "attention"}
    modern = build_table("modern", "rafdb")
    assert [c.recipe for c in modern.cells] == [None, "rafdb-modern"]


def test_missing_weights_names_the_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    why = missing_weights("resnet34_dda", "imagenet")
    assert "resnet34-333f7ec4.pth" in why and "resnet18-5c106cde.pth" in why and str(tmp_path) in why
    (tmp_path / "checkpoints").mkdir()
    for name in ("resnet34-333f7ec4.pth", "resnet18-5c106cde.pth"):
        (tmp_path / "checkpoints" / name).write_bytes(b"x")
    assert missing_weights("resnet34_dda", "imagenet") is None
    assert "VGGFace2" in missing_weights("resnet50", "vggface2")
    assert missing_weights("resnet50", None) is None


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert visible_gpus() == ["3", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """--scale cpu sets one torch thread in this process (inline runs): give the other tests theirs back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _interrupt_second_run(out: Path, first: str, second: str) -> threading.Thread:
    """SIGINT to this process once the first run has finished and the second has saved an epoch."""

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (out / first / "summary.json").is_file() and (out / second / "last.pt").is_file():
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.005)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def test_sweep_end_to_end_killed_after_the_first_run_then_resumed(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DDAKERN_DATA", str(tmp_path / "data"))
    out = tmp_path / "sweep"
    argv = ["ablation", "--data-root", "synthetic-hard", "--seeds", "2", "--scale", "cpu", "--executor", "inline"]
    argv += ["--cells", "resnet34-dda-[n3]*", "--out", str(out), "--run-args", TINY + SMALL_MODEL]
    first, second = "resnet34-dda-none-s113", "resnet34-dda-none-s114"  # the grid's first two runs
    watcher = _interrupt_second_run(out, first, second)
    assert reproduce.main(argv) == 130
    watcher.join(1)
    assert run_state(out / first) == "finished" and run_state(out / second) == "interrupted"
    assert not (out / "resnet34-dda-3-4-s113").exists()  # the sweep stopped: nothing after the stopped run
    stamp = (out / first / "summary.json").stat().st_mtime_ns
    capsys.readouterr()

    assert reproduce.main(argv) == 0
    err = capsys.readouterr().err
    assert f"{first}: finished before, skipped" in err and f"{second}: done after resuming" in err
    assert (out / first / "summary.json").stat().st_mtime_ns == stamp  # not run again
    epochs = [json.loads(line)["epoch"] for line in (out / second / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]  # resumed, not restarted

    runs = list(csv.DictReader((out / "runs.csv").open()))
    assert len(runs) == 4 and {r["status"] for r in runs} == {"done"}
    for r in runs:  # both protocols; best-on-test is at least the held-out selection's test figure
        assert float(r["best_on_test_acc"]) >= float(r["heldout_test_acc"]) > 0
    table = (out / "table.md").read_text()
    assert "| 3-4 |" in table and "| none |" in table and "±" in table and "ResNet-34: best-on-test" in table
    assert "15%" in table and "image_size 32" in table  # the set's label noise and the scale, in the header
    summary = json.loads((out / first / "summary.json").read_text())
    assert summary["data"]["label_noise"]["rate"] == 0.15 and summary["layout"] == "synthetic"

    # a results folder keeping only runs.json (run folders removed): the table continues, nothing runs again
    for run in runs:
        shutil.rmtree(run["folder"])
    assert reproduce.main(argv) == 0
    assert "finished before (recorded in runs.json, its folder is gone), skipped" in capsys.readouterr().err
    assert not any(Path(r["folder"]).exists() for r in runs)
    again = list(csv.DictReader((out / "runs.csv").open()))
    assert [(r["cell"], r["seed"], r["heldout_test_acc"], r["best_on_test_acc"]) for r in again] == [
        (r["cell"], r["seed"], r["heldout_test_acc"], r["best_on_test_acc"]) for r in runs
    ]
    assert {r["status"] for r in again} == {"done"} and "runs.json" in again[0]["note"]
    # part of the table (--cells) or fewer seeds: the other records stay in runs.json, the table keeps its cells
    table = (out / "table.md").read_text()
    part = [*argv[:4], "1", *argv[5:9], "--cells", "resnet34-dda-none", *argv[11:], "--report-only"]
    assert reproduce.main(part) == 0
    kept = list(csv.DictReader((out / "runs.csv").open()))
    assert sorted((r["cell"], r["seed"], r["best_on_test_acc"]) for r in kept) == sorted(
        (r["cell"], r["seed"], r["best_on_test_acc"]) for r in runs
    )
    one_seed = (out / "table.md").read_text()
    body = one_seed.split("|---|")[1]
    assert "| 3-4 | " in body and "| none | " in body and "±" not in body  # every cell shown, from seed 113 alone
    assert reproduce.main(argv + ["--report-only"]) == 0
    assert (out / "table.md").read_text().split("- written")[1].split("\n", 1)[1] == table.split("- written")[1].split(
        "\n", 1
    )[1]
    # a sweep with other settings (other run flags) is refused: its runs would be mixed with these
    capsys.readouterr()
    before = (out / "runs.json").read_bytes()
    assert reproduce.main([*argv[:-1], argv[-1] + " --epochs 1", "--report-only"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --out {out} holds a sweep with other settings (extra_run_flags: [")
    assert "\n" not in err
    assert (out / "runs.json").read_bytes() == before


GPU_JOB = """
import argparse, json, os, pathlib, sys, time
p = argparse.ArgumentParser()
p.add_argument("--barrier", type=pathlib.Path)
p.add_argument("--out", type=pathlib.Path)
a, _ = p.parse_known_args()
gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
(a.barrier / a.out.name).write_text(gpu or "")
deadline = time.monotonic() + 60
while len(list(a.barrier.iterdir())) < 2:  # the first two runs start together or neither ends
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.01)
a.out.mkdir(parents=True, exist_ok=True)
(a.out / "summary.json").write_text(json.dumps({"gpu": gpu}))
"""


def test_local_executor_runs_one_process_per_gpu_at_a_time(tmp_path: Path, monkeypatch) -> None:
    """`--executor local` on 2 GPUs: 3 runs, each a `python -m` process pinned to one GPU through
    CUDA_VISIBLE_DEVICES, two at once on different GPUs, the third when one of them is done. The run is a
    module recording its GPU (the scheduling is what is tested; train.run's own GPU use needs a GPU)."""
    (tmp_path / "gpu_job.py").write_text(GPU_JOB)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    barrier = tmp_path / "started"
    barrier.mkdir()
    jobs = [Job(f"run{i}", tmp_path / "sweep" / f"run{i}", "gpu_job", ("--barrier", str(barrier))) for i in range(3)]
    outcomes = Sweep("local", tmp_path / "sweep" / "logs").run(jobs)
    assert [o.state for o in outcomes] == ["done"] * 3, [o.exit_code for o in outcomes]
    gpus = [json.loads((j.folder / "summary.json").read_text())["gpu"] for j in jobs]
    assert sorted(gpus[:2]) == ["3", "5"] and gpus[2] in ("3", "5")  # one GPU each, both busy at once
    assert all((tmp_path / "sweep" / "logs" / f"run{i}.log").is_file() for i in range(3))


def test_slurm_path_through_submitits_local_executor(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("submitit")
    monkeypatch.setenv("DDAKERN_DATA", str(tmp_path / "data"))
    folder = tmp_path / "sweep" / "one-s113"
    flags = ("--recipe", "synthetic", "--synthetic-difficulty", "hard", "--model", "resnet18", *TINY.split())
    flags += ("--epochs", "1", "--no-tta", "--loader", "torch", "--workers", "0")
    sweep = Sweep("submitit-local", tmp_path / "sweep" / "logs")
    (outcome,) = sweep.run([Job("one-s113", folder, "train.run", flags)])
    assert outcome.state == "done" and outcome.exit_code == 0
    assert run_state(folder) == "finished"
    assert list((tmp_path / "sweep" / "logs" / "slurm").rglob("*_result.pkl"))  # ran as a submitit job


def test_slurm_without_submitit_is_one_line_before_any_work(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # not installed
    argv = ["ablation", "--data-root", str(tmp_path / "none"), "--executor", "slurm", "--out", str(tmp_path / "s")]
    assert reproduce.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --executor slurm needs submitit (import of submitit halted; None in sys.modules); " \
        "install it with: pip install 'ddakern[train]'"  # fmt: skip
    assert not (tmp_path / "s").exists()


def test_table_cells_are_mean_and_sample_std_with_missing_seeds_and_na_reasons() -> None:
    from train.table_report import markdown, mean_std

    table = build_table("ablation", "rafdb")
    done = {"column": "ResNet-34", "status": "done"}
    rows = [
        {**done, "row": "none", "seed": seed, "heldout_test_acc": a, "best_on_test_acc": b}
        for seed, a, b in ((113, 60.0, 62.0), (114, 62.0, 66.0), (115, 10.0, 10.0))  # 115: not a seed of this table
    ]
    rows.append({**done, "row": "3-4", "seed": 113, "heldout_test_acc": 50.0, "best_on_test_acc": 51})
    na = {"row": "all", "column": "ResNet-50", "status": "n/a", "note": "no ImageNet weights file x.pth"}
    rows.append({**na, "seed": 113})
    text = markdown(table, rows, ["- header"], [113, 114])
    assert "| none | 61.00 ± 1.41 | 64.00 ± 2.83 |" in text  # sample std (n - 1)
    assert "50.00 (n=1)" in text  # a seed missing is said, not hidden
    assert "n/a [1]" in text and "[1] no ImageNet weights file x.pth" in text
    assert mean_std([]) is None and mean_std([3.0]) == (3.0, 0.0)


def test_results_folders_keep_their_run_files_in_git():
    """bench/results/<table>/runs/ (the per-run files a committed table is read from and continued with)
    is not git-ignored; a user's own top-level runs/ is. A bare `runs/` rule once hid the former, and a
    committed table lost its runs."""
    root = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")

    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=root).returncode == 0

    assert not ignored("bench/results/reproduce_x/runs/cell-s113/summary.json")
    assert ignored("runs/my-run/summary.json")
