#!/usr/bin/env bash
# Issue 11's Kimi-K2 share benchmark on the GPU machine, needing nvcc, cuBLAS and the pip torch:
# builds the bf16-state GSQ kernels, checks them against the C++ references (and under
# compute-sanitizer memcheck and racecheck), then times the whole GSQ step on `experts` experts
# (kernels/gsq_kimi_bench.cu: ours, with the GEMM-rate and copy-bandwidth floors measured in the
# same process) and the reference-style PyTorch loops (bench/gsq_loop_reference.py: the step as
# the reference runs it, and the same reduced to our step's work), for 2 and 3 bits and both
# objectives, all in one run on one card. CHECKS=0 skips the kernel tests and sanitizers.
# Usage (on the device machine, from the repository root): bash scripts/gpu-kimi-bench.sh OUTDIR
#   [experts] [loop-steps]
set -euo pipefail
OUT="${1:?usage: gpu-kimi-bench.sh OUTDIR [experts] [loop-steps]}"
EXPERTS="${2:-48}"
LOOP_STEPS="${3:-50}"
B=build-gpu-kimi
mkdir -p "$B" "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
CUDA_LIB="$(dirname "$(dirname "$(command -v nvcc)")")/lib64"
EXACT=(-O3 -std=c++17 -arch=sm_90 --fmad=false -I.)
FAST=(-O3 -std=c++17 -arch=sm_90 -I.)
nvcc "${EXACT[@]}" -c kernels/gsq_step.cu -o "$B/gsq_step.o"
nvcc "${FAST[@]}" -Xptxas -v -c kernels/gsq_step_bf16.cu -o "$B/gsq_step_bf16.o" 2> "$OUT/ptxas-bf16.txt"
nvcc "${FAST[@]}" -c kernels/gsq_step_bf16_test.cu -o "$B/gsq_step_bf16_test.o"
nvcc "${FAST[@]}" -c kernels/gsq_kimi_bench.cu -o "$B/gsq_kimi_bench.o"
g++ -O3 -std=gnu++20 -fno-trapping-math -fopenmp-simd -I. -c kernels/gsq_step_ref.cc -o "$B/gsq_step_ref.o"
nvcc -arch=sm_90 "$B/gsq_step_bf16_test.o" "$B/gsq_step_bf16.o" "$B/gsq_step.o" "$B/gsq_step_ref.o" \
  -o "$B/gsq_step_bf16_test"
nvcc -arch=sm_90 "$B/gsq_kimi_bench.o" "$B/gsq_step_bf16.o" "$B/gsq_step.o" -L"$CUDA_LIB" -lcublas \
  -o "$B/gsq_kimi_bench"
if [ "${CHECKS:-1}" != 0 ]; then
  "$B/gsq_step_bf16_test" > "$OUT/gsq_step_bf16_test.txt" && echo "gsq_step_bf16_test: ok" \
    || { echo "gsq_step_bf16_test: FAILED"; grep -v " ok$" "$OUT/gsq_step_bf16_test.txt" | head; }
  for tool in memcheck racecheck; do
    compute-sanitizer --tool "$tool" --error-exitcode 3 "$B/gsq_step_bf16_test" > "$B/san.$tool.txt" 2>&1 \
      && echo "gsq_step_bf16_test $tool: clean" || echo "gsq_step_bf16_test $tool: FAILED (rc $?)"
    { echo "== $tool"; tail -5 "$B/san.$tool.txt"; } >> "$OUT/sanitizer.txt"
  done
fi
python3 bench/gsq_loop_reference.py --check | tee -a "$OUT/loop.jsonl"
for bits in 2 3; do
  for obj in expert-output layer-local; do
    "$B/gsq_kimi_bench" --experts "$EXPERTS" --bits "$bits" --objective "$obj" --steps 10 \
      | tee -a "$OUT/kimi-step.jsonl"
    # The loops keep every logit's gradient until Lion runs; where 48 experts do not fit the
    # card, a loop runs on half and says so (its time is linear in the experts: a per-expert loop).
    styles="minimal"
    [ "$obj" = expert-output ] && styles="reference minimal"
    for style in $styles; do
      python3 bench/gsq_loop_reference.py --experts "$EXPERTS" --bits "$bits" --objective "$obj" \
        --style "$style" --steps "$LOOP_STEPS" 2> "$B/loop.err" | tee -a "$OUT/loop.jsonl" \
        || { tail -3 "$B/loop.err"; python3 bench/gsq_loop_reference.py --experts $((EXPERTS / 2)) \
               --bits "$bits" --objective "$obj" --style "$style" --steps "$LOOP_STEPS" \
               | tee -a "$OUT/loop.jsonl"; }
    done
  done
done
