#!/usr/bin/env bash
# Per-expert SLQ with the per-layer calibration (issue 9): on each tiny model, the per-expert
# probes plus one tied probe per layer, projection and bitwidth; uniform GPTQ asym at 3 and 4
# bits against SLQ --per-expert-bits at 3 and 4 with each expert model (sum, scale, power); then
# random per-expert allocations quantized for real (the additivity check), deepseek first.
# Needs qctl built by scripts/gpu-build.sh (carry .debs and .gpu-data). Stops starting runs
# after BUDGET_S seconds (default 430) so the call ends inside the device budget.
# Usage (on the GPU machine, from the repository root): bash scripts/gpu-slq-per-layer.sh OUTDIR
set -uo pipefail
OUT="${1:?usage: gpu-slq-per-layer.sh OUTDIR}"
BUDGET_S="${BUDGET_S:-430}"
mkdir -p "$OUT"
export QUANT_SHARED_DIR="$PWD/.gpu-data" QUANT_SHARED="$PWD/.gpu-data"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/machine.txt" 2>&1
bash scripts/gpu-build.sh qctl > "$OUT/build.txt" 2>&1 || { tail -30 "$OUT/build.txt"; exit 1; }
echo "built after ${SECONDS}s"
export LD_LIBRARY_PATH="/tmp/quant-prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export QCTL="$PWD/build-gpu/coordinator/qctl/qctl" QCTL_COMMIT="${QCTL_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
export DEADLINE=$(( $(date +%s) + BUDGET_S - SECONDS ))
P=/tmp/pl-probes
C="--device cuda --probe-cache $P"
PE="--slq --per-expert-bits --export native $C"
for m in tiny-deepseek-v3 tiny-qwen3-moe; do
  configs=("$m:gptq:3:asym:experts:$PE --expert-aggregation sum"
           "$m:gptq:3:asym:experts:--device cuda" "$m:gptq:4:asym:experts:--device cuda")
  for b in 3 4; do
    for a in scale power; do configs+=("$m:gptq:$b:asym:experts:$PE --expert-aggregation $a"); done
  done
  configs+=("$m:gptq:4:asym:experts:$PE --expert-aggregation sum")
  for c in "${configs[@]}"; do
    if (( $(date +%s) > DEADLINE )); then echo "deadline: skipped $c"; continue; fi
    python3 bench/quantize_matrix.py "$OUT/slq-per-layer.jsonl" "$c" 2>&1 | cut -c1-200
  done
  if [[ $m == tiny-deepseek-v3 ]]; then
    python3 bench/slq_per_expert_additivity.py "$m" "$OUT/additivity-$m.jsonl" 20 1 "$P" \
      --device cuda 2>&1 | cut -c1-200
  fi
done
# The last model's allocations only with the time left.
python3 bench/slq_per_expert_additivity.py tiny-qwen3-moe "$OUT/additivity-tiny-qwen3-moe.jsonl" \
  20 1 "$P" --device cuda 2>&1 | cut -c1-200
tar czf "$OUT/probes.tgz" -C "$P" . 2>/dev/null
echo "done after ${SECONDS}s"
