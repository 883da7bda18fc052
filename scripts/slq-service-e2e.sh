#!/usr/bin/env bash
# SLQ through the service on loopback: quant-coordinator and two quant-workers run an SLQ job on
# tiny-deepseek-v3 (the workers probe, the coordinator solves the global bit budget, then the
# workers quantize at the chosen bits), `qctl watch` follows it and `qctl status` shows the
# allocation; then the same job runs embedded (`qctl quantize --slq`, in memory) and the two
# checkpoints and allocations are compared.
# Usage: scripts/slq-service-e2e.sh [extra job flags]   (after scripts/build.sh)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BUILD_DIR:-$ROOT/build}"
export OPENBLAS_NUM_THREADS=1
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
# The model's path as `qctl submit` sends it (absolute, normalised): the manifest records it.
MODEL="$(cd "$ROOT/../shared/models/tiny-deepseek-v3" && pwd)"
FLAGS=(--model "$MODEL" --method gptq --slq --bits 3.5 --calib-tokens 8192 --no-eval "$@")

"$BIN/coordinator/service/quant-coordinator" --state "$WORK/state.db" > "$WORK/coordinator.out" &
until grep -q '^http' "$WORK/coordinator.out" 2>/dev/null; do sleep 0.1; done
ADDR="$(sed -n 's/^grpc //p' "$WORK/coordinator.out")"
for w in w0 w1; do
  "$BIN/worker/service/quant-worker" --coordinator "$ADDR" --id "$w" 2> "$WORK/$w.log" > /dev/null &
done
"$BIN/coordinator/qctl/qctl" submit --coordinator "$ADDR" "${FLAGS[@]}" --out "$WORK/service"
start=$(date +%s)
"$BIN/coordinator/qctl/qctl" watch 1 --coordinator "$ADDR"
echo "service: $(( $(date +%s) - start )) s"
echo "--- qctl status 1 (the allocation, then the probe and solve tasks)"
"$BIN/coordinator/qctl/qctl" status 1 --coordinator "$ADDR" | grep -E 'SLQ|bits$|probe|solve'
echo "--- qctl logs 1 (the solve)"
"$BIN/coordinator/qctl/qctl" logs 1 --coordinator "$ADDR" | grep -E 'solve' || true
start=$(date +%s)
"$BIN/coordinator/qctl/qctl" quantize --in-memory "${FLAGS[@]}" --out "$WORK/embedded" \
  > "$WORK/embedded.log"
echo "embedded: $(( $(date +%s) - start )) s"
echo "--- byte comparison (service vs embedded)"
for f in "$WORK/embedded"/*; do
  name="$(basename "$f")"
  case "$name" in report.json|slq_bits.png) continue ;; esac
  if cmp -s "$f" "$WORK/service/$name"; then
    echo "identical $name"
  else
    echo "DIFFERENT $name"; diff <(python3 -m json.tool "$f" 2>/dev/null || cat "$f") \
      <(python3 -m json.tool "$WORK/service/$name" 2>/dev/null || cat "$WORK/service/$name") | head -20
  fi
done
python3 - "$WORK/service/report.json" "$WORK/embedded/report.json" <<'PY'
import json, sys
a, b = (json.load(open(p))["slq"] for p in sys.argv[1:])
same = {u["unit"]: u["bits"] for u in a["units"]} == {u["unit"]: u["bits"] for u in b["units"]}
print("allocation identical:", same, "| units:", len(a["units"]),
      "| average bits %.4f / %.4f" % (a["average_bits"], b["average_bits"]),
      "| predicted KL %.5f / %.5f" % (a["predicted_kl"], b["predicted_kl"]),
      "| probes run %d / %d" % (a["probes_run"], b["probes_run"]))
PY
