#!/usr/bin/env bash
# The worker on one GPU (issue 11, item 3), on the GPU machine: builds qctl and the GPU tests
# against the pip torch (scripts/gpu-build.sh; carry .debs and .gpu-data), runs the GPU tests
# (kernels, and --device cuda against --device cpu), quantizes both tiny models with GPTQ and GSQ
# on the GPU (report.json per run: phases and per-unit times), and profiles one GSQ job with
# Nsight Systems where it is installed. Output: few files (the device returns at most 8).
# Usage (on the GPU machine, from the repository root): bash scripts/gpu-worker-check.sh OUTDIR
set -uo pipefail
OUT="${1:?usage: gpu-worker-check.sh OUTDIR}"
mkdir -p "$OUT"
export QUANT_SHARED_DIR="$PWD/.gpu-data"
LOG="$OUT/worker-check.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$LOG"
if ! bash scripts/gpu-build.sh qctl qctl_cuda_test gsq_step_cuda_test gptq_pack_cuda_test \
    > "$OUT/build.txt" 2>&1; then
  tail -40 "$OUT/build.txt"
  exit 1
fi
export LD_LIBRARY_PATH="/tmp/quant-prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
B=build-gpu
for t in kernels/gsq_step_cuda_test kernels/gptq_pack_cuda_test coordinator/qctl/qctl_cuda_test; do
  echo "== $t" >> "$LOG"
  "$B/$t" 2>&1 | tail -12 | tee -a "$LOG"
done
: > "$OUT/reports.jsonl"
for m in tiny-qwen3-moe tiny-deepseek-v3; do
  for method in gptq gsq; do
    o="/tmp/worker-$m-$method"
    "$B/coordinator/qctl/qctl" quantize --model ".gpu-data/models/$m" --out "$o" \
      --method "$method" --bits 3 --device cuda --overwrite > "$o.log" 2>&1
    echo "== $m $method cuda: rc $?" | tee -a "$LOG"
    grep -E "ppl|KL|phase|seconds" "$o.log" | head -20 | tee -a "$LOG"
    python3 -c "import json,sys; r=json.load(open('$o/report.json')); r['model']='$m'; r['run']='$method-cuda'; print(json.dumps(r))" >> "$OUT/reports.jsonl"
  done
done
# SLQ on the GPU: the tied units, then every routed expert on its own (--per-expert-bits).
for extra in "" "--per-expert-bits --export native"; do
  o="/tmp/worker-slq$([ -n "$extra" ] && echo -per-expert)"
  "$B/coordinator/qctl/qctl" quantize --model .gpu-data/models/tiny-deepseek-v3 --out "$o" \
    --method gptq --grid asym --slq --bits 3.5 --probe-cache /tmp/worker-probes --device cuda \
    --overwrite $extra > "$o.log" 2>&1
  echo "== slq $extra: rc $?" | tee -a "$LOG"
  grep -E "slq|KL|phase" "$o.log" | head -12 | tee -a "$LOG"
  python3 -c "import json,sys; r=json.load(open('$o/report.json')); r['model']='tiny-deepseek-v3'; r['run']='slq $extra'; print(json.dumps(r))" >> "$OUT/reports.jsonl"
done
NSYS="$(command -v nsys || ls /usr/local/cuda*/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)"
if [ -n "$NSYS" ]; then
  "$NSYS" profile -o /tmp/worker-prof -t cuda,osrt --force-overwrite true \
    "$B/coordinator/qctl/qctl" quantize --model .gpu-data/models/tiny-qwen3-moe \
    --out /tmp/worker-prof-out --method gsq --bits 3 --device cuda --overwrite > /tmp/prof.log 2>&1
  "$NSYS" stats -r cuda_gpu_kern_sum,cuda_api_sum,cuda_gpu_mem_time_sum /tmp/worker-prof.nsys-rep \
    > "$OUT/nsys-stats.txt" 2>&1
  head -60 "$OUT/nsys-stats.txt"
else
  echo "no nsys on this machine" | tee -a "$LOG"
fi
