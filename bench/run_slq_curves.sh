#!/usr/bin/env bash
# Issue 9's curves: measured EAR/KL against average bits for SLQ (budget and EAR-target modes)
# and uniform bitwidths, GPTQ and GSQ as the quantizer, asymmetric (and symmetric at one budget),
# both tiny models. Uniform GPTQ/GSQ rows at 2-4 bits come from the issue-8 matrix
# (bench/results/quantize-2026-11-25-s2.jsonl). Probes are cached in PROBES (first run per
# model/quantizer/grid probes, the rest read them). ~80 minutes on 2 cores.
# Usage: bench/run_slq_curves.sh OUT.jsonl PROBES_DIR
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:?usage: run_slq_curves.sh OUT.jsonl PROBES_DIR}"
PROBES="${2:?usage: run_slq_curves.sh OUT.jsonl PROBES_DIR}"
configs=()
for m in tiny-qwen3-moe tiny-deepseek-v3; do
  for b in 3.5 2.5 3 4 5; do configs+=("$m:gptq:$b:asym:experts:--slq --probe-cache $PROBES"); done
  for e in 0.95 0.97 0.99; do
    configs+=("$m:gptq:4:asym:experts:--slq --target-ear $e --probe-cache $PROBES")
  done
  for b in 5 6 8; do configs+=("$m:gptq:$b:asym:experts"); done
done
for m in tiny-qwen3-moe tiny-deepseek-v3; do
  for b in 3 2.5 3.5; do configs+=("$m:gsq:$b:asym:experts:--slq --probe-cache $PROBES"); done
done
for m in tiny-qwen3-moe tiny-deepseek-v3; do
  configs+=("$m:gptq:3.5:sym:experts:--slq --probe-cache $PROBES")
done
exec python3 "$ROOT/bench/quantize_matrix.py" "$OUT" "${configs[@]}"
