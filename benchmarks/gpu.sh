#!/usr/bin/env bash
# The GPU checks and figures in one go, as BENCHMARKS.md's H200 rows were made: the `gpu` tests, then
# the model, training-step and export benchmarks on CUDA. Logs go to the folder given (gpu-results/).
#
#     bash benchmarks/gpu.sh [OUT_DIR]          # PEAK_TFLOPS=989 for an H100/H200's dense bf16 peak
set -u
out=${1:-gpu-results}
mkdir -p "$out"
peak=()
[ -n "${PEAK_TFLOPS:-}" ] && peak=(--peak-tflops "$PEAK_TFLOPS")
python -m pytest -q -m gpu tests/test_gpu.py -rs 2>&1 | tee "$out/tests.txt"
python benchmarks/bench_models.py --device cuda --rounds 3 --iters 10 --warmup 3 \
    --modes fp32 bf16 bf16+cl3d bf16+compile --output "$out/models.md" 2>&1 | tee "$out/models.txt"
python benchmarks/bench_train.py --device cuda --size 64 --channels 64 --batch 64 \
    --modes fp32 bf16 bf16+cl3d "${peak[@]}" 2>&1 | tee "$out/train.txt"
python benchmarks/bench_export.py --device cuda 2>&1 | tee "$out/export.txt"
