"""Benchmark session setup: Triton interpreter off CUDA, compile variants last, optional deadline.

DDAKERN_BENCH_DEADLINE_S=N skips every benchmark that would start more than N seconds after the session
began, so a time-boxed run (bench/gpu_check.sh) still ends normally and writes its --benchmark-json.
"""

from __future__ import annotations

import os
import time

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

_START = time.monotonic()


def _is_compile(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("variant") == "compile"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Whole-step rows (test_bench_step.py) first, torch.compile variants after everything else: a
    time-boxed run (bench/gpu_check.sh) measures the step-level figures before anything else and
    compile time does not crowd out the rest."""
    items.sort(key=lambda item: (_is_compile(item), "test_bench_step" not in item.nodeid))


@pytest.fixture(autouse=True)
def _deadline() -> None:
    limit = os.environ.get("DDAKERN_BENCH_DEADLINE_S")
    if limit and time.monotonic() - _START > float(limit):
        pytest.skip(f"DDAKERN_BENCH_DEADLINE_S={limit} reached")
