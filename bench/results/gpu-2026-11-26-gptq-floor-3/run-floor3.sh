#!/usr/bin/env bash
# One device call (H100), run from .wt-gptq3: bash run-floor3.sh $OUT. Builds gptq-floor-3, runs
# the kernel test, the bench, the GPU-vs-CPU test and compute-sanitizer; then puts bac6afe's five
# changed files (before-files/) over the tree, rebuilds the bench and runs it (the baseline).
set -uo pipefail
OUT="$1"
ln -sfn "$PWD/../.debs" .debs; ln -sfn "$PWD/../.gpu-data" .gpu-data
export QUANT_SHARED_DIR="$PWD/.gpu-data"
bash scripts/gpu-build.sh gptq_kimi_bench gptq_pack_cuda_test qctl_cuda_test qctl > "$OUT/build.txt" 2>&1 || { tail -40 "$OUT/build.txt"; exit 1; }
export LD_LIBRARY_PATH="/tmp/quant-prefix/usr/lib/x86_64-linux-gnu:/tmp/quant-prefix/usr/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/bench.jsonl"
build-gpu/kernels/gptq_pack_cuda_test 2>&1 | grep -v "^pack" | tee "$OUT/kernel-test.txt"
echo '--- gptq-floor-3 (after)' >> "$OUT/bench.jsonl"
build-gpu/worker/quant/gptq_kimi_bench 48 | tee -a "$OUT/bench.jsonl"
build-gpu/coordinator/qctl/qctl_cuda_test --gtest_filter=*SameModelAsOnTheCpu/0 2>&1 | tail -8 | tee "$OUT/qctl-cuda.txt"
for tool in memcheck racecheck; do
  timeout 60 compute-sanitizer --tool "$tool" build-gpu/kernels/gptq_pack_cuda_test gptq 2>&1 \
    | grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|FAIL|bit-identical' | sed "s/^/$tool: /" | tee -a "$OUT/kernel-test.txt"
done
cp -r before-files/. .
cmake --build build-gpu -j"$(nproc)" --target gptq_kimi_bench > "$OUT/before-build.txt" 2>&1 || { tail -20 "$OUT/before-build.txt"; exit 1; }
echo '--- bac6afe (before), same machine, rebuilt after the runs above' >> "$OUT/bench.jsonl"
build-gpu/worker/quant/gptq_kimi_bench 48 | tee -a "$OUT/bench.jsonl"
