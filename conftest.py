"""Test-session setup shared by tests/ and bench/: under pytest-xdist each worker gets its share of the cores.

Without this every worker (and every subprocess a test starts) would run torch's default thread pool of
one thread per core, and `-n auto` on 2 cores would oversubscribe them 2x.
"""

import os

import pytest

_workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
if _workers:
    _threads = str(max(1, len(os.sched_getaffinity(0)) // int(_workers)))
    os.environ["OMP_NUM_THREADS"] = _threads  # inherited by the subprocesses the tests start
    import torch

    torch.set_num_threads(int(_threads))


# The modules that take longest on one xdist worker (seconds in a `-n 2` run on a 2-core machine, 2026-12-07,
# before import ddakern stopped importing torch._dynamo; test_dispatch.py fell from 66 to about 25), longest
# first. Under xdist they are scheduled first and whole (see below), so that neither worker is left running
# one long module at the end while the other idles.
LONGEST_FIRST: tuple[str, ...] = (
    "tests/test_kernels_sm90.py",  # 117: the sm_90 quick compile (ptxas) twice
    "tests/test_op_gpu_check.py",  # 82: bench/gpu_check.sh --dry-run
    "tests/test_train_resume.py",  # 82: SIGTERM + resume, three train.run processes per loader
    "tests/test_export.py",  # 67
    "tests/test_recompute.py",  # 65: one torchrun DDP run
    "tests/test_cuda_dry_run.py",  # 53
    "tests/test_train_fuse.py",  # 49
    "tests/test_op_attention_residual.py",  # 49: the Triton interpreter
    "tests/test_kernels_gpu_budget.py",  # 48: Triton interpreter at a GPU's block budget
    "tests/test_train_distributed.py",  # 47: two torchrun runs
    "tests/test_train_modern.py",  # 45: one torchrun run
    "bench/test_bench_models.py",  # 45
    "bench/test_bench_step.py",  # 41
    "tests/test_reproduce.py",  # 35: a sweep killed and resumed, a submitit job
    "tests/test_original_checkpoint.py",  # 34
    "tests/test_fused_models.py",  # 32
)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, the LONGEST_FIRST modules first (each keeps its own order, and the rest theirs): the
    scheduler below hands out modules in this order. A run in one process keeps pytest's order (and
    bench/conftest.py's, which a time-boxed benchmark run relies on)."""
    if not _workers:
        return
    rank = {module: i for i, module in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):  # noqa: ANN201
    """`-n N` without --dist (the README's command): whole modules to a worker, in collection order, the next
    one to whichever worker is free (xdist's loadscope). A module's fixtures (a trained run, a GPU-check dry
    run, a compiled cache) are then built once, not once per worker that a chunk of its tests lands on, and
    the longest modules go first. An explicit `--dist` other than load is left to xdist."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # keep the order above (xdist's own puts the most tests first)
    return LoadScopeScheduling(config, log)


@pytest.fixture(autouse=True)
def _triton_interpret_unchanged():
    """No test may leave TRITON_INTERPRET changed: kernel modules imported later in the same worker would be
    compiled for a GPU instead of interpreted (bench/sm90_compile.py once popped it at import)."""
    before = os.environ.get("TRITON_INTERPRET")
    yield
    after = os.environ.get("TRITON_INTERPRET")
    assert after == before, f"this test left TRITON_INTERPRET changed ({before!r} -> {after!r})"
