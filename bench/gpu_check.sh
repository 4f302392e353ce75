#!/usr/bin/env bash
# One-command GPU check (<= 8 min on one H200): kernel tests on CUDA, then bench/gpu_check.py at DDA shapes.
# Needs only the source tree + torch (>= 2.11) + triton (3.6-3.9) + pytest; no install (PYTHONPATH=.).
# Results go to $OUT if set, else bench/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET
RESULTS="${OUT:-bench/results}"
mkdir -p "$RESULTS"
PY="${PYTHON:-python}"

"$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available())"

timeout 200 "$PY" -m pytest -x -q -p no:cacheprovider \
    tests/test_op_attention_residual.py tests/test_op_channel_attention.py tests/test_dispatch.py \
    2>&1 | tee "$RESULTS/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}

timeout 330 "$PY" bench/gpu_check.py --out "$RESULTS" --deadline-s 270 2>&1 | tee "$RESULTS/gpu_check.log"
bench_rc=${PIPESTATUS[0]}

echo "gpu_check.sh: tests rc=$tests_rc, bench rc=$bench_rc (results in $RESULTS)"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
