#!/usr/bin/env bash
# SLQ against uniform on the GPU (issue 9): scope `all` (attention, shared experts and dense
# layers join the routed experts as units) and `--per-expert-bits` (every routed expert its own
# units), GPTQ asym, both tiny models; and GSQ asym uniform against SLQ. Needs qctl built by
# scripts/gpu-build.sh (carry .debs and .gpu-data). One JSON line per run, as bench/quantize_matrix.py.
# Usage (on the GPU machine, from the repository root): bash scripts/gpu-slq-curves.sh OUTDIR
set -uo pipefail
OUT="${1:?usage: gpu-slq-curves.sh OUTDIR}"
mkdir -p "$OUT"
export QUANT_SHARED_DIR="$PWD/.gpu-data" QUANT_SHARED="$PWD/.gpu-data"
bash scripts/gpu-build.sh qctl > "$OUT/slq-build.txt" 2>&1 || { tail -30 "$OUT/slq-build.txt"; exit 1; }
export LD_LIBRARY_PATH="/tmp/quant-prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export QCTL="$PWD/build-gpu/coordinator/qctl/qctl" QCTL_COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
P=/tmp/gpu-probes
C=(--device cuda --probe-cache $P)
configs=()
for m in tiny-deepseek-v3 tiny-qwen3-moe; do
  for b in 3 4 5; do configs+=("$m:gptq:$b:asym:all:--device cuda"); done
  for b in 3 3.5 4 5; do configs+=("$m:gptq:$b:asym:all:--slq ${C[*]}"); done
  for b in 3 3.5 4; do configs+=("$m:gptq:$b:asym:experts:--slq --per-expert-bits --export native ${C[*]}"); done
  for b in 2 3 4; do configs+=("$m:gptq:$b:asym:experts:--device cuda" "$m:gsq:$b:asym:experts:--device cuda"); done
  for b in 2.5 3 3.5 4; do configs+=("$m:gsq:$b:asym:experts:--slq ${C[*]}"); done
done
python3 bench/quantize_matrix.py "$OUT/slq-gpu.jsonl" "${configs[@]}" 2>&1 | cut -c1-160
