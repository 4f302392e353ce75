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
# after the resume, DDP and checkpoint tests stopped starting processes and initialising weights they did not
# need), longest first. Under xdist they are scheduled first and whole (see below), so that neither worker is
# left running one long module at the end while the other idles.
LONGEST_FIRST: tuple[str, ...] = (
    "tests/test_op_gpu_check.py",  # 35: bench/gpu_check.sh --dry-run
    "tests/test_kernels_sm90.py",  # 33: the sm_90 quick compile (ptxas)
    "tests/test_export.py",  # 31
    "tests/test_recompute.py",  # 31: one two-rank DDP run
    "tests/test_cuda_dry_run.py",  # 31
    "tests/test_kernels_gpu_budget.py",  # 30: Triton interpreter at a GPU's block budget
    "bench/test_bench_step.py",  # 28
    "tests/test_train_fuse.py",  # 28
    "tests/test_train_distributed.py",  # 23: two torchrun runs
    "tests/test_models.py",  # 23
    "tests/test_train_run.py",  # 23
    "tests/test_train_resume.py",  # 22: SIGTERM + resume, one train.run process per loader
    "tests/test_reproduce.py",  # 21: a sweep killed and resumed, a submitit job
    "tests/test_op_attention_residual.py",  # 20: the Triton interpreter
    "bench/test_bench_models.py",  # 19
    "tests/test_errors_data.py",  # 16
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
