"""bench/gpu_check.sh --dry-run: every stage script runs on CPU (tiny shapes, the Triton interpreter), each
stage's file is on disk before the next stage starts, at most 8 files land in OUT, a part killed by its
deadline leaves the earlier results and its own partial record, and nothing the bare GPU machine lacks
(DALI, tqdm, matplotlib, cv2, onnx, PIL, torchvision, ...) is needed: they are made unimportable here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"
BLOCKED = ("nvidia.dali", "tqdm", "matplotlib", "cv2", "onnx", "onnxruntime", "PIL", "skimage", "pandas",
           "torchvision")  # fmt: skip
# a sitecustomize that makes the packages the GPU machine lacks absent, as they are there: a None entry in
# sys.modules makes `import` raise ModuleNotFoundError and importlib.util.find_spec return None
BLOCKER = f"import sys\nsys.modules.update(dict.fromkeys({BLOCKED!r}))\n"


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """One dry run of every stage; the compile part gets a 1 s limit, so its deadline kills it."""
    out = tmp_path_factory.mktemp("gpu_check")
    site = tmp_path_factory.mktemp("site")
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {
        **os.environ,
        "OUT": str(out),
        "PYTHON": sys.executable,
        "PYTHONPATH": str(site),
        "GPU_CHECK_CAP_compile": "1",
        "GPU_CHECK_SOFT_PCT": "200",  # no soft stop before the 1 s kill (the imports alone may pass 85% of it)
        "GPU_CHECK_MIN_PART_S": "1",
    }
    res = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, env=env, timeout=600)
    return out, res


def stage(out: Path, n: int) -> dict:
    return json.loads((out / f"stage{n}.json").read_text())


def test_every_stage_writes_before_the_next(dry_run):
    out, res = dry_run
    log = res.stdout + res.stderr
    assert "stage3/compile(rc=124)" in log and res.returncode == 1, log[-3000:]  # only the killed part failed
    files = sorted(p.name for p in out.iterdir())
    assert files == ["gpu_check.log", "gpu_check.md", "stage0.json", "stage1.json", "stage2.json", "stage3.json"]
    assert len(files) <= 8
    order = [(n, part, info) for n in range(4) for part, info in stage(out, n)["parts"].items()]
    assert [(n, p) for n, p, _ in order] == [
        (0, "basics"), (1, "pytest"), (1, "budget"), (1, "memcheck"), (2, "ops"), (3, "steps"), (3, "compile")
    ]  # fmt: skip
    for n, part, info in order:  # each part began with every earlier stage's file already written
        assert {f"stage{k}.json" for k in range(n)} <= set(info["files_present"]), (n, part)
        assert f"stage{n + 1}.json" not in info["files_present"]
        assert info["status"] == ("killed" if part == "compile" else "done"), (part, info)
    for (_, _, a), (_, _, b) in zip(order, order[1:]):
        assert a["finished_at"] <= b["started_at"]
    assert "GPU" not in log or "Traceback" not in log


def test_stage_results(dry_run):
    out, _ = dry_run
    s0 = stage(out, 0)["checks"]
    assert s0["env"]["dry_run"] and s0["env"]["torch"]
    assert s0["env"]["c_compiler"] and Path(s0["env"]["c_compiler"]).is_file()  # this machine has gcc
    assert [r["op"] for r in s0["ops"]["rows"]] == ["attention_residual", "channel_attention"]
    assert all(r["ok"] and 0 <= r["worst_fraction_of_allowance"] <= 1 for r in s0["ops"]["rows"])
    assert s0["step"]["ok"] and s0["step"]["images_per_s"] > 0 and len(s0["step"]["losses"]) == 2
    s1 = stage(out, 1)["checks"]
    assert s1["pytest"]["ok"] and s1["pytest"]["counts"]["passed"] == 4 and not s1["pytest"]["failures"]
    rows = s1["budget"]["rows"]
    assert {(r["dtype"], r["layout"], r["budget"]) for r in rows} == {
        ("bf16", "NCHW", "default"), ("fp32", "channels_last", "chunked"), ("fp16", "NCHW", "unsplit")
    }  # fmt: skip
    assert all(r["ok"] for r in rows) and len(rows) == 6
    assert max(r["paths"]["chunks"] for r in rows) > 1 and max(r["paths"]["splits"] for r in rows) > 1
    memcheck = s1["memcheck"]
    if shutil.which("compute-sanitizer") is None:
        assert memcheck["status"] == "skipped" and "not found" in memcheck["note"]
        assert list(memcheck["case"].values()) == [True, True]  # the payload ran once, without the tool
    report = stage(out, 2)["checks"]["ops"]["report"]
    assert report["all_ok"] and report["status"] == "done" and len(report["results"]) == 4  # 2 shapes x 2 ops
    assert report["results"][0]["op"] == "attention_residual" and report["results"][0]["dtype"] == "bf16"
    assert len(report["sweep"]) == 11 and all(r["ok"] for r in report["sweep"])
    assert report["targets"]["best_sweep"]["config"] in [r["config"] for r in report["sweep"]]
    s3 = stage(out, 3)
    steps = s3["checks"]["steps"]["rows"]
    assert [r["variant"] for r in steps] == ["eager", "fused"]  # recompute-dda: GPU only (CI: test_bench_step)
    assert all(r["ok"] and r["images_per_s"] > 0 for r in steps)
    assert s3["parts"]["compile"]["status"] == "killed"  # killed by its 1 s deadline: the rows above remain
    assert s3["checks"].get("compile", {"status": "killed"})["status"] == "killed"
    md = (out / "gpu_check.md").read_text()
    assert "compile killed" in md and "| resnet18_dda | fused |" in md and "## Targets" in md


def test_no_forbidden_imports(dry_run):
    """The stages ran with those packages unimportable, and record the third-party modules they loaded."""
    out, _ = dry_run
    for mods in (stage(out, 0)["checks"]["env"]["modules"], stage(out, 3)["checks"]["steps"]["modules"]):
        assert not mods["forbidden"]
        assert {"torch", "numpy", "ddakern"} <= set(mods["third_party"])


def test_shell_script_lints():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    if shutil.which("shellcheck"):
        res = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout
    res = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "unknown argument" in res.stderr


def test_a_row_that_raises_is_recorded_and_the_ops_stage_goes_on(tmp_path, monkeypatch) -> None:
    """bench/gpu_check.py (stage 2): a row whose check raises (a compile or memory error at one shape on the
    GPU) is a row with its one-line error, and the other rows, the headline's timings and the sweep still
    come (it ended the whole stage: every row after it was lost)."""
    from bench import gpu_check

    real = gpu_check.check
    calls = []

    def check(case, backend, refs=None):
        calls.append(case)
        if len(calls) == 2:
            raise RuntimeError("out of resources: shared memory, Required: 262144")
        return real(case, backend, refs)

    monkeypatch.setattr(gpu_check, "check", check)
    code = gpu_check.main(["--dry-run", "--dtypes=bf16", "--hosts=resnet50", "--no-sweep", "--out", str(tmp_path)])
    assert code == 1  # not all correct: a row failed
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = report["results"]
    assert len(rows) == len(calls) >= 3 and report["status"] == "done"
    bad = [r for r in rows if r["check"].get("error")]
    assert len(bad) == 1 and bad[0]["check"]["error"].startswith("RuntimeError: out of resources")
    assert all(r["timing"].get("fused") for r in rows if r is not bad[0])  # the others were timed
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| NO | RuntimeError: out of resources: shared memory, Required: 262144 |" in table


def test_stage_one_keeps_time_for_its_later_parts(tmp_path) -> None:
    """gpu_check.sh's stage 1: pytest may not take the time budget and memcheck need (it left memcheck
    nothing when it ran to its limit), budget not memcheck's. Every part is skipped here (a minimum part
    longer than the budget), so the log shows the limit each one got, without running it."""
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "GPU_CHECK_STAGES": "1"}
    env.update(GPU_CHECK_BUDGET_S="75", GPU_CHECK_MIN_PART_S="1000")
    res = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, env=env, timeout=120)
    limits = {}
    for line in res.stdout.splitlines():
        if "skipped:" in line:
            part = line.split("stage 1 ")[1].split()[0]
            limits[part] = int(line.split("skipped: ")[1].split("s left")[0])
    # each limit is the stage's end (75 s) less the reserve, less the seconds the script has run (0-2 here)
    assert 3 <= limits["pytest"] <= 5 and 33 <= limits["budget"] <= 35 and 73 <= limits["memcheck"] <= 75, res.stdout


def test_soft_deadline_counts_from_the_parts_start_and_stage0_times_one_step_past_it(monkeypatch, tmp_path) -> None:
    """The soft deadline is the Unix time the shell set when it started the part (the imports before the
    stage file count against it), and stage 0's step check times at least one step even when its warm-up
    (the Triton compiles) ends past that deadline (it timed none and failed the stage)."""
    import time

    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # the stage scripts import their neighbours by name
    from bench import gpu_stage0
    from bench.stagefile import StageFile, soft_deadline_left

    monkeypatch.setenv("GPU_CHECK_DEADLINE_S", "40")
    monkeypatch.setenv("GPU_CHECK_PART_START", f"{time.time() - 10:.9f}")  # the part began 10 s ago
    assert 25 < soft_deadline_left() <= 30
    monkeypatch.setenv("GPU_CHECK_PART_START", f"{time.time() - 41:.9f}")  # warm-up ended past the deadline
    monkeypatch.setenv("GPU_CHECK_DRY_RUN", "1")
    monkeypatch.setitem(gpu_stage0.STEP, "dry", {**gpu_stage0.STEP["dry"], "steps": 3})
    sf = StageFile(tmp_path / "stage0.json")
    assert gpu_stage0.step_check(sf, torch.device("cpu"))
    step = json.loads((tmp_path / "stage0.json").read_text())["checks"]["step"]
    assert len(step["step_ms"]) == 1 and step["images_per_s"] > 0 and "fewer timed steps" in step["note"]


def test_an_item_starts_only_when_the_longest_so_far_still_fits(monkeypatch, tmp_path) -> None:
    """Between the soft deadline and the hard timeout lie 15% of a part's limit, often less than one compile-
    heavy row: a row started just before the soft deadline was killed mid-way (the row lost, the part and
    the whole check failed; stage 3's resnet50_dda compile row always was). Each loop now starts an item
    only when more time is left than its longest item so far took (a first guess before the first)."""
    from bench import stagefile

    clock = [1000.0]
    left = [100.0]
    monkeypatch.setattr(stagefile, "_clock", lambda: clock[0])
    monkeypatch.setattr(stagefile, "soft_deadline_left", lambda: left[0] - (clock[0] - 1000.0))
    chk = stagefile.StageFile(tmp_path / "stage3.json").check("compile", part="compile")
    assert not chk.room_for_next(first_guess_s=120)  # no row has run: the guess decides
    assert chk.room_for_next(first_guess_s=50)
    clock[0] += 60  # that row took 60 s: 40 left
    assert not chk.room_for_next(first_guess_s=50)  # the next would be killed: skipped instead
    chk2 = stagefile.StageFile(tmp_path / "stage1.json").check("pytest", part="pytest")
    clock[0], left[0] = 1000.0, 30.0
    assert all(chk2.room_for_next() for _ in range(3))  # instant items fit while time is left
    clock[0] += 10
    assert chk2.room_for_next()  # 20 s left, longest 10 s
    clock[0] += 12
    assert not chk2.room_for_next()  # 8 s left, longest 12 s


def test_a_timed_out_tool_takes_its_child_with_it(tmp_path) -> None:
    """memcheck runs `compute-sanitizer python ...`: on the soft timeout only the sanitizer was killed and the
    python it ran went on using the GPU into the next part's timings. Check.run kills the tool's whole
    process group, on a timeout and after a normal exit (anything left in the background)."""
    import time

    from bench.stagefile import StageFile

    chk = StageFile(tmp_path / "stage1.json").check("memcheck", part="memcheck")
    pidfile = tmp_path / "child.pid"
    tool = ["bash", "-c", f"sleep 60 & echo $! > {pidfile}; echo started; wait"]  # a tool running a child

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"

    with pytest.raises(subprocess.TimeoutExpired) as e:
        chk.run(tool, dict(os.environ), timeout=1.5)
    assert "started" in e.value.stdout
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)
    rc, out, _ = chk.run(["bash", "-c", f"sleep 60 & echo $! > {pidfile}; echo done"], dict(os.environ), timeout=30)
    child = int(pidfile.read_text())
    assert rc == 0 and out.strip() == "done"
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)
