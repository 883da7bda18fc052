#!/usr/bin/env bash
# The GSQ step kernels on the GPU machine, needing nothing but nvcc and g++: build, check against
# the C++ references (random inputs, odd shapes, poisoned outputs), compute-sanitizer memcheck and
# racecheck, then time them on Kimi-K2 expert shares against the copy-bandwidth floor.
# Usage (on the device machine, from the repository root): bash scripts/gpu-kernels.sh OUTDIR [experts...]
set -euo pipefail
OUT="${1:?usage: gpu-kernels.sh OUTDIR [experts...]}"
shift
EXPERTS=("${@:-8}")
B=build-gpu-kernels
mkdir -p "$B" "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
NVFLAGS=(-O3 -std=c++17 -arch=sm_90 --fmad=false -I.)
nvcc "${NVFLAGS[@]}" -Xptxas -v -c kernels/gsq_step.cu -o "$B/gsq_step.o" 2> "$OUT/ptxas.txt"
nvcc "${NVFLAGS[@]}" -c kernels/gsq_step_cuda_test.cu -o "$B/gsq_step_cuda_test.o"
g++ -O3 -std=gnu++20 -fno-trapping-math -fopenmp-simd -I. -c kernels/gsq_step_ref.cc \
    -o "$B/gsq_step_ref.o"
nvcc -arch=sm_90 "$B/gsq_step.o" "$B/gsq_step_cuda_test.o" "$B/gsq_step_ref.o" \
    -o "$B/gsq_step_cuda_test"
"$B/gsq_step_cuda_test" | tee "$OUT/test.txt"
for tool in memcheck racecheck; do
  compute-sanitizer --tool "$tool" --error-exitcode 3 "$B/gsq_step_cuda_test" > "$OUT/$tool.txt" 2>&1 \
    && echo "$tool: clean" || { echo "$tool: FAILED (rc $?)"; tail -20 "$OUT/$tool.txt"; }
  tail -2 "$OUT/$tool.txt"
done
for e in "${EXPERTS[@]}"; do "$B/gsq_step_cuda_test" --bench "$e" | tee -a "$OUT/bench.jsonl"; done
