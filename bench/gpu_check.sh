#!/usr/bin/env bash
# One-command GPU check, staged and cut-proof: `bash bench/gpu_check.sh` on a bare CUDA machine (python3,
# torch >= 2.11, triton 3.6-3.9, numpy, pytest; no venv, no install: PYTHONPATH only; DALI is not needed).
# `bash bench/gpu_check.sh --dry-run` (or GPU_CHECK_DRY_RUN=1) runs every stage on CPU with tiny shapes,
# the Triton kernels through the interpreter (CI: tests/test_op_gpu_check.py).
#
# Every stage writes its file before the next starts; each part below is one process under its own
# `timeout` (TERM, then KILL 10 s later), with a soft deadline (GPU_CHECK_DEADLINE_S, 85% of its limit, from
# GPU_CHECK_PART_START)
# at which it stops between rows and ends normally. Rows are saved atomically as they are measured, so
# a part killed at any moment keeps what it measured, and gpu_check.md is rebuilt after every part.
#   stage 0 (ends by  90 s) basics    environment; both fused ops fwd+bwd at 48x256x56x56 bf16 vs the
#                                     reference; fused resnet34_dda bf16 steps at batch 48, 224 px (img/s)
#   stage 1 (ends by 200 s) pytest    tests/test_op_*.py + test_dispatch.py on CUDA
#                           budget    real DDA shapes under explicit GPU / chunked / unsplit budgets,
#                                     fp32 / bf16 / fp16, NCHW / channels_last
#                           memcheck  compute-sanitizer memcheck of every kernel (skipped without the tool)
#   stage 2 (ends by 310 s) ops       bench/gpu_check.py: fused vs eager vs torch.compile, GB/s, sweep
#   stage 3 (ends by 480 s) steps     whole step, bf16, batch 48, 224 px, resnet34_dda + resnet50_dda:
#                                     eager, fused, recompute-dda (img/s, peak memory)
#                           compile   the same with torch.compile (last: compile time is the least certain)
# Files (at most 6 in $OUT, else bench/results/; dry run: $OUT, else /tmp/gpu_check_dry): stage0..3.json,
# gpu_check.md (summary), gpu_check.log (all output); a part killed mid-write may leave one .*.tmp, removed
# after each part.
#
# Estimated time per stage on one H200. Method: Triton compiles = distinct kernel specializations launched,
# counted on CPU with bench/aot.py's capture() (the launchers' real choices, launches skipped); 1-2 s per
# compile on first use; ~10 s per process for imports and CUDA init; torch.compile of a DDA step 40-90 s;
# timings as rows x impls x passes x (do_bench rep 60 + warm-up 15 ms); the Python overhead from the CPU
# dry run (each part 10-25 s on a busy 2-core CPU, mostly imports). Counted: stage 0 ops 8 compiles,
# resnet34_dda fused step 40; stage 1 budget 90 (12 rows x 2 ops); resnet50_dda fused step 37.
#   stage 0: 10 s + 48 compiles (50-95 s) + 6 steps (~1 s): 60-90 s; a slow compiler cuts the timed steps
#   stage 1: pytest up to 80 s but leaving 70 s of the stage to the parts after it (torch-backend tests
#            first, Triton compiles for the rest: likely cut there, counted as skipped), budget up to 45 s
#            leaving 40 s to memcheck (~25-45 compiles: the first 3-6 of its 12 rows, which already cover
#            every dtype, layout and budget), memcheck ~30-45 s; ends by 200 s by construction. Without the
#            reserves memcheck got what pytest and budget left: nothing, when both ran to their limits
#   stage 2: 10 s + 3 reference torch.compiles (~30 s) + 32 rows (~1 s timing + ~5 compiles each):
#            ~110 s limit reached about half-way (headline first, then bf16), the sweep last (often cut)
#   stage 3: steps: 10 s + 6 rows (warm-up 3-60 s: resnet50_dda compiles 37 kernels; 10 steps ~0.5 s):
#            60-110 s; compile: 10 s + 40-90 s per model (resnet50_dda likely cut at 480 s)
#   every loop (pytest tests, budget rows, stage 3 rows) starts an item only while more time is left than its
#   longest item so far took (stage 3 compile: 50 s before the first), so an item is skipped, not killed
#   whole: <= 480 s by construction, + at most 10 s KILL grace; the device call allows 540 s.
# Environment: OUT (results folder), GPU_CHECK_BUDGET_S (whole budget, default 480 s; the device call allows
# 540 s), GPU_CHECK_STAGES (default "0 1 2 3"), GPU_CHECK_CAP_<part> (a part's limit in s),
# GPU_CHECK_MIN_PART_S (skip a part with less time left, default 5), GPU_CHECK_SOFT_PCT (the soft deadline's
# share of a part's limit, default 85), PYTHON (interpreter, default python3).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

DRY="${GPU_CHECK_DRY_RUN:-0}"
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY=1 ;;
        -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d' | cut -c3-; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$arg' (only --dry-run)" >&2; exit 2 ;;
    esac
done
export GPU_CHECK_DRY_RUN="$DRY"
if [ "$DRY" = 1 ]; then
    export TRITON_INTERPRET=1
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # correctness only; OpenMP spins badly on a busy small CPU
    RESULTS="${OUT:-${TMPDIR:-/tmp}/gpu_check_dry}"
    BUDGET="${GPU_CHECK_BUDGET_S:-1800}"
    ENDS=("$BUDGET" "$BUDGET" "$BUDGET" "$BUDGET")
    CAP_SCALE=4  # a busy 2-core CI machine is far slower than the GPU machine's host
else
    unset TRITON_INTERPRET
    RESULTS="${OUT:-bench/results}"
    BUDGET="${GPU_CHECK_BUDGET_S:-480}"
    ENDS=(90 200 310 "$BUDGET")
    CAP_SCALE=1
fi
export PYTHONPATH="$PWD:$PWD/bench${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
STAGES="${GPU_CHECK_STAGES:-0 1 2 3}"
MIN_PART_S="${GPU_CHECK_MIN_PART_S:-5}"
SOFT_PCT="${GPU_CHECK_SOFT_PCT:-85}"
mkdir -p "$RESULTS" || exit 2
LOG="$RESULTS/gpu_check.log"
for n in $STAGES; do rm -f "$RESULTS/stage$n.json"; done
rm -f "$RESULTS"/.*.tmp
case " $STAGES " in *" 0 "*) : >"$LOG" ;; esac
echo "gpu_check.sh: stages '$STAGES', dry run $DRY, budget ${BUDGET}s, results in $RESULTS ($(date -u +%FT%TZ))" | tee -a "$LOG"
SECONDS=0
FAILED=""
CURRENT=""

summary() {
    rm -f "$RESULTS"/.*.tmp
    "$PY" bench/gpu_summary.py "$RESULTS" || echo "gpu_check.sh: summary failed" | tee -a "$LOG"
}

on_signal() {  # the whole script was stopped: mark the running part, rebuild the summary, leave
    if [ -n "$CURRENT" ]; then
        # shellcheck disable=SC2086
        "$PY" bench/stagefile.py mark $CURRENT --rc 143 | tee -a "$LOG"
    fi
    summary
    exit 143
}
trap on_signal INT TERM

# run_part STAGE PART CAP RESERVE: run the rest of the arguments under `timeout` for
# min(CAP, stage end - RESERVE, budget) s; RESERVE keeps that many seconds of the stage for its later parts
run_part() {
    local stage=$1 part=$2 cap=$3 reserve=$4 var limit rc file
    shift 4
    file="$RESULTS/stage$stage.json"
    var="GPU_CHECK_CAP_$part"
    limit="${!var:-$((cap * CAP_SCALE))}"
    [ $((ENDS[stage] - reserve - SECONDS)) -lt "$limit" ] && limit=$((ENDS[stage] - reserve - SECONDS))
    [ $((BUDGET - SECONDS)) -lt "$limit" ] && limit=$((BUDGET - SECONDS))
    "$PY" bench/stagefile.py start "$file" --stage "$stage" --part "$part" --limit "$limit"
    if [ "$limit" -lt "$MIN_PART_S" ]; then
        echo "gpu_check.sh: stage $stage $part skipped: ${limit}s left at ${SECONDS}s" | tee -a "$LOG"
        "$PY" bench/stagefile.py mark "$file" --part "$part" --rc 200 | tee -a "$LOG"
        FAILED="$FAILED stage$stage/$part(no-time)"
        summary
        return
    fi
    echo "gpu_check.sh: stage $stage $part, limit ${limit}s, at ${SECONDS}s" | tee -a "$LOG"
    CURRENT="$file --part $part"
    GPU_CHECK_DEADLINE_S=$((limit * SOFT_PCT / 100)) GPU_CHECK_PART_START="$(date +%s.%N)" \
        timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    CURRENT=""
    "$PY" bench/stagefile.py mark "$file" --part "$part" --rc "$rc" | tee -a "$LOG"
    summary
    [ "$rc" -eq 0 ] || FAILED="$FAILED stage$stage/$part(rc=$rc)"
}

if [ "$DRY" = 1 ]; then
    PYTEST_ARGS=(tests/test_op_attention_residual.py::test_low_precision_triton
                 tests/test_op_channel_attention.py::test_low_precision_triton)
    OPS_ARGS=(--dry-run "--dtypes=bf16" "--hosts=resnet50")
    STEP_ARGS=("--models=resnet18_dda")
else
    PYTEST_ARGS=()
    for f in tests/test_op_*.py; do
        [ "$f" = tests/test_op_gpu_check.py ] || PYTEST_ARGS+=("$f")  # that one runs this script on CPU
    done
    PYTEST_ARGS+=(tests/test_dispatch.py)
    OPS_ARGS=("--dtypes=bf16,fp32")
    STEP_ARGS=()
fi

for stage in $STAGES; do
    case "$stage" in
        0) run_part 0 basics 90 0 "$PY" bench/gpu_stage0.py "$RESULTS/stage0.json" ;;
        1) run_part 1 pytest 80 70 "$PY" bench/gpu_stage1.py pytest "$RESULTS/stage1.json" -- "${PYTEST_ARGS[@]}"
           run_part 1 budget 45 40 "$PY" bench/gpu_stage1.py budget "$RESULTS/stage1.json"
           run_part 1 memcheck 45 0 "$PY" bench/gpu_stage1.py memcheck "$RESULTS/stage1.json" ;;
        2) run_part 2 ops 110 0 "$PY" bench/gpu_check.py --stage-file "$RESULTS/stage2.json" "${OPS_ARGS[@]}" ;;
        3) run_part 3 steps 110 0 "$PY" bench/gpu_stage3.py steps "$RESULTS/stage3.json" "${STEP_ARGS[@]}"
           run_part 3 compile 200 0 "$PY" bench/gpu_stage3.py compile "$RESULTS/stage3.json" "${STEP_ARGS[@]}" ;;
        *) echo "gpu_check.sh: unknown stage '$stage' in GPU_CHECK_STAGES" | tee -a "$LOG"; FAILED="$FAILED stage$stage" ;;
    esac
done

echo "gpu_check.sh: done after ${SECONDS}s;${FAILED:- every part passed}" | tee -a "$LOG"
cat "$RESULTS/gpu_check.md"
[ -z "$FAILED" ]
