#!/usr/bin/env bash
# One-command GPU check (<= 8 min on one H200), in this order:
#   1. kernel correctness tests on CUDA (tests/test_op_*.py, tests/test_dispatch.py),
#   2. bench/gpu_check.py: fused ops vs reference at the DDA shapes (correctness + do_bench timings),
#   3. the CUDA-sized pytest-benchmark suite (pytest bench/ --benchmark-only) in the time that is left,
#      whole-step rows first (bench/test_bench_step.py: bf16, batch 48, 224 px, peak memory), compile
#      variants last (bench/conftest.py), then bench/report.py (markdown always, PNG when matplotlib is installed).
# Needs only the source tree + torch (>= 2.11) + triton (3.6-3.9) + pytest + pytest-benchmark; no install
# (PYTHONPATH=.). DALI benchmarks skip themselves without nvidia-dali. Results go to $OUT if set, else
# bench/results/. GPU_CHECK_BUDGET_S (default 470) is the whole script's time budget in seconds.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET
RESULTS="${OUT:-bench/results}"
mkdir -p "$RESULTS"
PY="${PYTHON:-$(command -v python3 || command -v python)}"  # the H200 image has python3 only
BUDGET="${GPU_CHECK_BUDGET_S:-470}"
SECONDS=0

"$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available())"

timeout 140 "$PY" -m pytest -x -q -p no:cacheprovider \
    tests/test_op_attention_residual.py tests/test_op_channel_attention.py tests/test_dispatch.py \
    2>&1 | tee "$RESULTS/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}
echo "gpu_check.sh: kernel tests rc=$tests_rc after ${SECONDS}s"

timeout 200 "$PY" bench/gpu_check.py --out "$RESULTS" --deadline-s 150 2>&1 | tee "$RESULTS/gpu_check.log"
bench_rc=${PIPESTATUS[0]}
echo "gpu_check.sh: gpu_check.py rc=$bench_rc after ${SECONDS}s"

# pytest-benchmark writes its JSON when the session ends: new benchmarks stop at the deadline, and the
# timeout sends SIGINT (pytest still ends the session and writes the JSON) before a KILL 15 s later.
# 40 s stay for the KILL grace and the report.
suite_s=$((BUDGET - SECONDS - 40))
suite_rc=0
rm -f "$RESULTS/bench.json" "$RESULTS/bench.md" "$RESULTS/bench.png"
if [ "$suite_s" -ge 60 ]; then
    DDAKERN_BENCH_DEADLINE_S=$((suite_s - 60)) timeout -s INT -k 15 "$suite_s" \
        "$PY" -m pytest bench/ -q -p no:cacheprovider --benchmark-only \
        --benchmark-json="$RESULTS/bench.json" 2>&1 | tee "$RESULTS/bench.log"
    suite_rc=${PIPESTATUS[0]}
    if [ "$suite_rc" -eq 124 ] && [ -s "$RESULTS/bench.json" ]; then
        echo "gpu_check.sh: benchmark suite stopped at its ${suite_s}s time box; bench.json has what finished"
        suite_rc=0
    fi
    if [ -s "$RESULTS/bench.json" ]; then
        timeout 30 "$PY" bench/report.py "$RESULTS/bench.json" --title "ddakern benchmarks (bench/gpu_check.sh)" \
            --markdown "$RESULTS/bench.md" --png "$RESULTS/bench.png"
    fi
else
    echo "gpu_check.sh: only ${suite_s}s left; benchmark suite skipped"
    suite_rc=1
fi

echo "gpu_check.sh: tests rc=$tests_rc, gpu_check rc=$bench_rc, bench suite rc=$suite_rc after ${SECONDS}s (results in $RESULTS)"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ] && [ "$suite_rc" -eq 0 ]
