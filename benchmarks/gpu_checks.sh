#!/usr/bin/env bash
# The GPU checks of the CUDA paths, in one run: the CUDA tests, then the benchmarks that report the GPU's
# numbers (corruptions on the device, evaluate with PIQE and with PaQ-2-PiQ in float32 and in mixed
# precision, attribution per method, the quality models' speed). Meant for a machine lent for minutes:
# each step has its own time limit, a failing step does not stop the others, and everything is logged to
# $OUT (or runs/gpu_checks) with the summary table of the headlines at the end.
#
#     bash benchmarks/gpu_checks.sh            # after `make test`'s set-up (.venv)
#
# At most 16.5 minutes by its limits; about 7 expected on one H100-class GPU with 16 cores.
set -u
PY=${PY:-.venv/bin/python}
LOGS=${OUT:-runs/gpu_checks}
mkdir -p "$LOGS"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$LOGS/gpu.txt"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $LOGS/NAME.log, go on regardless
    local name=$1 limit=$2
    shift 2
    echo "== $name"
    timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1
    echo "   exit $? ($(tail -n 1 "$LOGS/$name.log"))"
}

step cuda_tests 300 "$PY" -m pytest -q -p no:cacheprovider -k cuda \
    tests/test_cuda.py tests/test_corrupt.py tests/test_fullref.py tests/test_similarity.py \
    tests/test_paq2piq.py tests/test_piqe.py tests/test_iqa_models.py
step bench_corrupt 120 "$PY" benchmarks/bench_corrupt.py --device cuda --images 32 --severity 3 --batch 16
# ResNet-18 + PIQE, + PaQ-2-PiQ, and + PaQ-2-PiQ in mixed precision (its agreement with float32 first);
# the four default corruptions at severities 1-2 keep the bare loop's CPU distortions to seconds
for judge in "piqe float32" "paq2piq float32" "paq2piq mixed"; do
    set -- $judge
    step "bench_evaluate_$1_$2" 120 "$PY" benchmarks/bench_evaluate.py --device cuda --distort-on device \
        --iqa "$1" --precision "$2" --n 64 --batch 512 --workers 8 --skip-memory
done
step bench_explain 120 "$PY" benchmarks/bench_explain.py --device cuda --batch 32
step bench_iqa_speed 90 "$PY" benchmarks/bench_iqa_speed.py --device cuda --batch 16
echo "== summary"
"$PY" benchmarks/summary.py "$LOGS"/bench_*.log | tee "$LOGS/summary.txt"
