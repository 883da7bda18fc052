#!/usr/bin/env bash
# The issue-8 results matrix: both tiny models, RTN/GPTQ/GSQ at 2-4 bits, sym and asym, scope
# experts (and all at 3 bits), both GSQ objectives at 3 bits, and bf16. ~100 minutes on 2 cores.
# Usage: bench/run_quantize_matrix.sh OUT.jsonl
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:?usage: run_quantize_matrix.sh OUT.jsonl}"
configs=()
for m in tiny-qwen3-moe tiny-deepseek-v3; do
  for b in 2 3 4; do configs+=("$m:gptq:$b:sym:experts"); done
  for b in 3 2; do configs+=("$m:gsq:$b:sym:experts"); done
done
for m in tiny-qwen3-moe tiny-deepseek-v3; do
  for b in 2 3 4; do configs+=("$m:gptq:$b:asym:experts" "$m:rtn:$b:sym:experts" "$m:rtn:$b:asym:experts"); done
  for b in 2 3; do configs+=("$m:gsq:$b:asym:experts"); done
  configs+=("$m:bf16")
done
for m in tiny-qwen3-moe tiny-deepseek-v3; do
  configs+=("$m:gsq:4:sym:experts" "$m:gsq:4:asym:experts")
  configs+=("$m:rtn:3:sym:all" "$m:gptq:3:sym:all" "$m:gsq:3:sym:all")
  configs+=("$m:gsq:3:sym:experts:--objective layer-local")
done
exec python3 "$ROOT/bench/quantize_matrix.py" "$OUT" "${configs[@]}"
