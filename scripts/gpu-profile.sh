#!/usr/bin/env bash
# Issue 11's "where the time goes" for the tiny models on one GPU: each model quantized with GSQ
# 3-bit on CUDA twice, once plain (the phase times of report.json) and once under the torch
# (Kineto) profiler (`qctl quantize --profile`), whose trace bench/trace_summary.py sums per phase,
# per layer and per kernel. The traces stay in /tmp (tens of MB each).
# Usage (on the GPU machine, after scripts/gpu-build.sh qctl, with its LD_LIBRARY_PATH):
#   QUANT_SHARED=DIR bash scripts/gpu-profile.sh OUTDIR
set -euo pipefail
OUT="${1:?usage: gpu-profile.sh OUTDIR}"
QCTL="${QCTL:-build-gpu/coordinator/qctl/qctl}"
mkdir -p "$OUT"
for m in tiny-qwen3-moe tiny-deepseek-v3; do
  args=(quantize --model "$QUANT_SHARED/models/$m" --method gsq --bits 3 --device cuda --overwrite)
  "$QCTL" "${args[@]}" --out "/tmp/profile-plain-$m" > "$OUT/qctl-$m.txt"
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({'model': sys.argv[2], 'phases': r.get('phases'), 'eval': r.get('eval', {}).get('kl')}))" \
    "/tmp/profile-plain-$m/report.json" "$m" >> "$OUT/plain-phases.jsonl"
  "$QCTL" "${args[@]}" --out "/tmp/profile-$m" --profile "/tmp/trace-$m.json" >> "$OUT/qctl-$m.txt"
  python3 bench/trace_summary.py "/tmp/trace-$m.json" --json "$OUT/summary-$m.json" \
    | tee "$OUT/summary-$m.md"
done
