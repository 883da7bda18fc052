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
: > "$OUT/ptxas.txt"
for k in gsq_step gptq_block pack gsq_step_cuda_test gptq_pack_cuda_test; do
  nvcc "${NVFLAGS[@]}" -Xptxas -v -c "kernels/$k.cu" -o "$B/$k.o" 2>> "$OUT/ptxas.txt"
done
for r in gsq_step_ref gptq_block_ref pack_ref; do
  g++ -O3 -std=gnu++20 -fno-trapping-math -fopenmp-simd -I. -c "kernels/$r.cc" -o "$B/$r.o"
done
LIBS=("$B/gsq_step.o" "$B/gptq_block.o" "$B/pack.o" "$B/gsq_step_ref.o" "$B/gptq_block_ref.o" "$B/pack_ref.o")
for t in gsq_step_cuda_test gptq_pack_cuda_test; do
  nvcc -arch=sm_90 "$B/$t.o" "${LIBS[@]}" -o "$B/$t"
  "$B/$t" | tee "$OUT/$t.txt"
  for tool in memcheck racecheck; do
    log="$B/$t.$tool.txt"
    compute-sanitizer --tool "$tool" --error-exitcode 3 "$B/$t" > "$log" 2>&1 \
      && echo "$t $tool: clean" || { echo "$t $tool: FAILED (rc $?)"; tail -20 "$log"; }
    { echo "== $t $tool"; cat "$log"; } >> "$OUT/sanitizer.txt"
    tail -1 "$log"
  done
done
for e in "${EXPERTS[@]}"; do "$B/gsq_step_cuda_test" --bench "$e" | tee -a "$OUT/bench.jsonl"; done
