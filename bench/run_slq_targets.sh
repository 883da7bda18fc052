#!/usr/bin/env bash
# SLQ's EAR-target mode on both tiny models, GPTQ asym, targets 0.95 / 0.97 / 0.99 (and 0.97 with
# GSQ), reading the probes cached by bench/run_slq_curves.sh in PROBES_DIR.
# Usage: bench/run_slq_targets.sh OUT.jsonl PROBES_DIR
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:?usage: run_slq_targets.sh OUT.jsonl PROBES_DIR}"
PROBES="${2:?usage: run_slq_targets.sh OUT.jsonl PROBES_DIR}"
configs=()
for m in tiny-qwen3-moe tiny-deepseek-v3; do
  for e in 0.95 0.97 0.99; do
    configs+=("$m:gptq:4:asym:experts:--slq --target-ear $e --probe-cache $PROBES")
  done
done
for m in tiny-qwen3-moe tiny-deepseek-v3; do
  configs+=("$m:gsq:4:asym:experts:--slq --target-ear 0.97 --probe-cache $PROBES")
done
exec python3 "$ROOT/bench/quantize_matrix.py" "$OUT" "${configs[@]}"
