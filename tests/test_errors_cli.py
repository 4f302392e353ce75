"""A new user's mistakes through the real CLIs (`train.run` / `train.fuse`'s `main`, in-process).

Each case asserts the exit code, one stderr line naming the file or flag, and for the cases that used to
lose work, that the earlier results are still there and loadable. Two cases run `python -m train.run` /
`python -m train.fuse` as subprocesses, where the process is what is checked: a refusal decided from the
environment at start-up, and the module entry's exit code; the rest call `main(argv)` (tests/inprocess.py),
which saves each case the interpreter and torch start-up (about 5 CPU-seconds).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from inprocess import run_main

from train import checkpoint, fuse, run

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--model", "resnet18", "--image-size", "32", "--batch-size", "8", "--no-tta", "--augment", "none",
    "--synthetic-train", "16", "--synthetic-val", "8", "--synthetic-test", "8", "--loader", "torch",
    "--workers", "0", "--no-progress", "--device", "cpu", "--threads", "1",
]  # fmt: skip
MAINS = {"train.run": run.main, "train.fuse": fuse.main}


def cli(args: list[str], cwd: Path, capfd, module: str = "train.run", **kw) -> tuple[int, str, list[str]]:
    """(exit code, stdout, stderr lines) of `module`'s main(args) run in `cwd`, without TRITON_INTERPRET
    (as a user's shell has it); keyword arguments go to inprocess.run_main."""
    code, out, err = run_main(MAINS[module], args, capfd, cwd=cwd, env={"TRITON_INTERPRET": None}, **kw)
    return code, out, [ln for ln in err.splitlines() if ln.strip()]


def cli_process(args: list[str], cwd: Path, module: str = "train.run") -> tuple[int, str, list[str]]:
    """The same through `python -m module` in a subprocess."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TRITON_INTERPRET", None)
    p = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    return p.returncode, p.stdout, [ln for ln in p.stderr.splitlines() if ln.strip()]


def one_line(rc: int, err: list[str], code: int, *needles: str, after_start: bool = False) -> None:
    """Exit code `code` and a single `error:` line naming `needles`; with after_start, the run's own
    progress lines (logged before the failure) may come first, but the error is still one line, last."""
    assert rc == code, err
    errors = [ln for ln in err if ln.startswith("error: ")]
    assert len(errors) == 1 and err[-1] == errors[0] and (after_start or len(err) == 1), err
    assert not any("Traceback" in ln for ln in err), err
    for needle in needles:
        assert needle in errors[0], err


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synthetic")


@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory) -> Path:
    """A finished one-epoch run (its folder); tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("trained") / "run"
    rc, _, err = cli([*TINY, "--data-root", str(data), "--out", str(out), "--epochs", "1"], ROOT, None)
    assert rc == 0, err
    return out


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a run folder (its files and sub-folders, such as tb/ with the TensorBoard events)."""
    shutil.copytree(src, dst)
    return dst


def test_resume_from_another_directory_and_into_another_out(data: Path, trained: Path, tmp_path: Path, capfd) -> None:
    run = copy_run(trained, tmp_path / "a" / "run")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    args = [*TINY, "--data-root", str(data), "--epochs", "2", "--resume", str(run / "last.pt"), "--out", "other"]
    rc, out, err = cli(args, elsewhere, capfd)
    assert rc == 0, err
    assert f"report: {run / 'summary.json'}" in out
    assert any("continuing in the checkpoint's folder" in line for line in err), err
    assert not (elsewhere / "other").exists() and not (elsewhere / "runs").exists()
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["epochs_run"] == 2
    assert checkpoint.load(run / "best.pt")["epoch"] >= 1


def test_existing_out_is_refused_and_kept(data: Path, trained: Path, tmp_path: Path, capfd) -> None:
    run = copy_run(trained, tmp_path / "run")
    before = (run / "best.pt").read_bytes()
    rc, _, err = cli([*TINY, "--data-root", str(data), "--out", str(run), "--epochs", "1"], ROOT, capfd)
    one_line(rc, err, 2, f"--out {run} already holds a run", "--resume auto", "--overwrite")
    assert (run / "best.pt").read_bytes() == before
    assert checkpoint.load(run / "best.pt")["model_name"] == "resnet18"


@pytest.mark.parametrize("loader", ["torch", "dali"])
def test_batch_larger_than_training_set_is_one_error(data: Path, tmp_path: Path, loader: str, capfd) -> None:
    out = tmp_path / "runs" / "x"
    args = [*TINY, "--data-root", str(data), "--out", str(out), "--batch-size", "64", "--loader", loader]
    rc, _, err = cli(args, tmp_path, capfd)
    # the data line (what was found under --data-root) may come first; the error is one line, last
    one_line(rc, err, 2, "--batch-size 64 is larger than the training set (16 images)", after_start=True)
    assert not out.exists()  # nothing written: no empty run folder either


def test_non_finite_loss_in_the_first_epoch_says_no_checkpoint_exists(data: Path, tmp_path: Path, capfd) -> None:
    out = tmp_path / "run"
    rc, _, err = cli([*TINY, "--data-root", str(data), "--out", str(out), "--debug-nan-at-step", "1"], ROOT, capfd)
    one_line(rc, err, 1, "non-finite loss at epoch 1, step 1", "no checkpoint was saved yet", after_start=True)
    assert "last.pt" not in err[-1] and not (out / "last.pt").exists()


def test_resume_on_another_data_set_is_refused(data: Path, trained: Path, tmp_path: Path, capfd) -> None:
    run = copy_run(trained, tmp_path / "run")
    raf = data / "rafdb"  # the synthetic set's RAF-DB copy: also 7 classes, other names and order
    args = ["--recipe", "rafdb", "--data-root", str(raf), "--resume", str(run / "last.pt"), "--epochs", "2"]
    rc, _, err = cli(args, ROOT, capfd)
    one_line(rc, err, 1, str(run / "last.pt"), "trained on synthetic", "rafdb")
    assert checkpoint.load(run / "last.pt")["epoch"] == 1


def test_fuse_with_another_image_size_is_refused(data: Path, trained: Path, tmp_path: Path, capfd) -> None:
    best = str(trained / "best.pt")
    args = ["--method", "late", "--members", best, best, "--image-size", "48", "--out", str(tmp_path / "f")]
    rc, _, err = cli([*args, "--data-root", str(data), "--device", "cpu", "--no-progress"], ROOT, capfd, "train.fuse")
    one_line(rc, err, 2, "--image-size 48", "trained with 32")
    assert not (tmp_path / "f").exists()


# both CLIs and both kinds of bad path, not every pairing: run_folder's own test covers both kinds directly
@pytest.mark.parametrize("module,kind", [("train.run", "file"), ("train.fuse", "file-parent")])
def test_bad_out_is_one_line(data: Path, trained: Path, tmp_path: Path, module: str, kind: str, capfd) -> None:
    (tmp_path / "f").write_text("not a folder")
    out = tmp_path / "f" if kind == "file" else tmp_path / "f" / "run"
    if module == "train.run":
        args = [*TINY, "--data-root", str(data), "--out", str(out)]
    else:
        best = str(trained / "best.pt")
        args = ["--method", "late", "--members", best, best, "--data-root", str(data), "--out", str(out)]
    rc, _, err = cli(args, ROOT, capfd, module)
    one_line(rc, err, 2, f"--out {out}")
    assert (tmp_path / "f").read_text() == "not a folder"


def test_unwritable_out_is_one_line(data: Path, capfd) -> None:
    rc, _, err = cli([*TINY, "--data-root", str(data), "--out", "/proc/ddakern-run"], ROOT, capfd)
    one_line(rc, err, 2, "--out /proc/ddakern-run: cannot write there")


def test_cuda_without_cuda_is_one_line(data: Path, tmp_path: Path, capfd) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is there")
    args = [*TINY, "--data-root", str(data), "--out", str(tmp_path / "run"), "--device", "cuda"]
    rc, _, err = cli(args, ROOT, capfd)
    one_line(rc, err, 2, "cuda")
    assert not (tmp_path / "run").exists()


def test_triton_backend_on_cpu_is_refused_at_start(data: Path, tmp_path: Path) -> None:
    args = [*TINY, "--model", "resnet18_dda", "--fused-ops", "--ops-backend", "triton"]
    rc, _, err = cli_process([*args, "--data-root", str(data), "--out", str(tmp_path / "run")], ROOT)
    one_line(rc, err, 2, "--ops-backend triton needs a CUDA device")  # decided from the process environment
    # the old spelling --kernels sets the same ops_backend: test_train_config's alias test checks that


@pytest.mark.parametrize("module", ["train.run", "train.fuse"])
def test_bad_resume_or_member_file_exits_1(data: Path, tmp_path: Path, module: str, capfd) -> None:
    bad = tmp_path / "junk.pt"
    bad.write_bytes(os.urandom(256))
    if module == "train.run":
        args = [*TINY, "--data-root", str(data), "--resume", str(bad)]
    else:
        args = ["--method", "late", "--members", str(bad), str(bad), "--data-root", str(data)]
    if module == "train.run":
        rc, _, err = cli(args, tmp_path, capfd, module)
    else:  # `python -m train.fuse` itself, once: the module entry's exit code
        rc, _, err = cli_process(args, tmp_path, module)
    one_line(rc, err, 1, str(bad))


def test_outputs_get_the_umask_and_stale_temporaries_go(data: Path, trained: Path, tmp_path: Path, capfd) -> None:
    run = copy_run(trained, tmp_path / "run")
    stale = run / ".best.pt.k2j3h4.tmp"
    stale.write_bytes(b"0" * 4096)
    args = [*TINY, "--data-root", str(data), "--epochs", "2", "--resume", str(run / "last.pt")]
    rc, _, err = cli(args, ROOT, capfd, umask=0o022)
    assert rc == 0, err
    assert not stale.exists()
    assert not any("replaying the input pipeline's first 0 epoch(s)" in line for line in err), err
    for name in ("last.pt", "best.pt", "summary.json", "config.json"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o644, name


def test_toml_resume_key_says_it_cannot_come_from_a_file(data: Path, tmp_path: Path, capfd) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text('resume = "auto"\n')
    rc, _, err = cli([*TINY, "--data-root", str(data), "--config", str(toml)], tmp_path, capfd)
    one_line(rc, err, 2, str(toml), "'resume' cannot be set from a file", "--resume")


def test_pretrained_random_file_is_one_line(data: Path, tmp_path: Path, capfd) -> None:
    bad = tmp_path / "weights.pt"
    bad.write_bytes(os.urandom(512))
    args = [*TINY, "--data-root", str(data), "--out", str(tmp_path / "run"), "--pretrained", str(bad)]
    rc, _, err = cli(args, ROOT, capfd)
    one_line(rc, err, 1, str(bad), after_start=True)
    assert "weights_only" not in err[-1]


def test_resume_chooses_its_device_now_and_may_turn_fp16_on(data: Path, trained: Path, tmp_path: Path, capfd) -> None:
    """A run saved with --device cuda:1 resumes on the device chosen now (here the CPU; it failed with "this
    machine has 1 CUDA GPU(s)" on a one-GPU machine), and a run trained without fp16 resumes with --amp fp16
    (its GradScaler state is empty, which GradScaler.load_state_dict refused with a traceback)."""
    import torch

    from ddakern import atomic
    from train.engine import make_optimizer
    from train.run import configure

    folder = copy_run(trained, tmp_path / "run")
    ckpt = checkpoint.load(folder / "last.pt")
    assert ckpt["scaler"] == {}
    ckpt["config"]["device"] = "cuda:1"
    atomic.torch_save(ckpt, folder / "last.pt")
    cfg, _ = configure(["--resume", str(folder / "last.pt")])
    assert cfg.device != "cuda:1"
    # the resumed run's components, as train.run builds them with --amp fp16, take the checkpoint's state
    net = run.build_net(cfg, len(ckpt["class_names"]), torch.device("cpu"))
    optimizer, _ = make_optimizer(cfg, net.parameters())
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    checkpoint.restore_checkpoint(
        ckpt, state=checkpoint.State(), net=net, optimizer=optimizer, scheduler=None, scaler=scaler, rank=0,
        world_size=ckpt["world_size"], model_name=ckpt["model_name"], num_classes=len(ckpt["class_names"]),
    )  # fmt: skip
    assert scaler.is_enabled() and scaler.get_scale() == 65536.0  # a fresh scale
