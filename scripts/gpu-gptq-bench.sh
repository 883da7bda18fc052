#!/usr/bin/env bash
# GPTQ on a Kimi-K2 share on the GPU machine: the worker's batched GPTQ (gptq_kimi_bench, built
# against the pip torch by scripts/gpu-build.sh; carry .debs and .gpu-data) under several options
# with its fp32 floor, the reference-style per-linear PyTorch loop (bench/gptq_loop_reference.py),
# the block kernel against its reference (with compute-sanitizer) and the GPU path against the
# CPU on the tiny model, one run.
# Usage (on the GPU machine, from the repository root): bash scripts/gpu-gptq-bench.sh OUTDIR
set -euo pipefail
OUT="${1:?usage: gpu-gptq-bench.sh OUTDIR}"
mkdir -p "$OUT"
export QUANT_SHARED_DIR="$PWD/.gpu-data"
bash scripts/gpu-build.sh gptq_kimi_bench gptq_pack_cuda_test qctl_cuda_test qctl > "$OUT/gptq-build.txt" 2>&1 || { tail -30 "$OUT/gptq-build.txt"; exit 1; }
export LD_LIBRARY_PATH="/tmp/quant-prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gptq-bench.jsonl"
build-gpu/kernels/gptq_pack_cuda_test 2>&1 | grep -v "^pack" | tee "$OUT/gptq-kernel-test.txt" || echo "gptq_pack_cuda_test: FAILED" | tee -a "$OUT/gptq-kernel-test.txt"
build-gpu/worker/quant/gptq_kimi_bench 48 | tee -a "$OUT/gptq-bench.jsonl"
python3 bench/gptq_loop_reference.py --experts 2 | tee -a "$OUT/gptq-bench.jsonl"
# The GPU GPTQ path against the CPU on tiny-qwen3-moe (codes and KL).
build-gpu/coordinator/qctl/qctl_cuda_test --gtest_filter=*SameModelAsOnTheCpu/0 2>&1 | tail -4 | tee -a "$OUT/gptq-bench.jsonl"
# The block kernel under compute-sanitizer (its GPTQ cases only).
for tool in memcheck racecheck; do
  timeout 90 compute-sanitizer --tool "$tool" build-gpu/kernels/gptq_pack_cuda_test gptq 2>&1 \
    | grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|FAIL|bit-identical' | sed "s/^/$tool: /" | tee -a "$OUT/gptq-kernel-test.txt"
done
