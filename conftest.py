"""Test-session setup shared by tests/ and bench/: under pytest-xdist each worker gets its share of the cores.

Without this every worker (and every subprocess a test starts) would run torch's default thread pool of
one thread per core, and `-n auto` on 2 cores would oversubscribe them 2x.
"""

import os

_workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
if _workers:
    _threads = str(max(1, len(os.sched_getaffinity(0)) // int(_workers)))
    os.environ["OMP_NUM_THREADS"] = _threads  # inherited by the subprocesses the tests start
    import torch

    torch.set_num_threads(int(_threads))


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _triton_interpret_unchanged():
    """No test may leave TRITON_INTERPRET changed: kernel modules imported later in the same worker would be
    compiled for a GPU instead of interpreted (bench/sm90_compile.py once popped it at import)."""
    before = os.environ.get("TRITON_INTERPRET")
    yield
    after = os.environ.get("TRITON_INTERPRET")
    assert after == before, f"this test left TRITON_INTERPRET changed ({before!r} -> {after!r})"
