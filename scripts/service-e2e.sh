#!/usr/bin/env bash
# The service end to end on loopback: quant-coordinator and two quant-workers quantize
# tiny-deepseek-v3 (GSQ, experts in gangs of 2), `qctl watch` follows it, then the same job
# runs embedded (`qctl quantize`) and the two checkpoints are compared byte for byte.
# Usage: scripts/service-e2e.sh [extra job flags]   (after scripts/build.sh)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BUILD_DIR:-$ROOT/build}"
export OPENBLAS_NUM_THREADS=2
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
FLAGS=(--model "$ROOT/../shared/models/tiny-deepseek-v3" --method gsq --bits 3
       --steps 200 --calib-tokens 32768 "$@")

"$BIN/coordinator/service/quant-coordinator" --state "$WORK/state.db" > "$WORK/coordinator.out" &
until grep -q '^http' "$WORK/coordinator.out" 2>/dev/null; do sleep 0.1; done
ADDR="$(sed -n 's/^grpc //p' "$WORK/coordinator.out")"
HTTP="$(sed -n 's/^http //p' "$WORK/coordinator.out")"
for w in w0 w1; do
  "$BIN/worker/service/quant-worker" --coordinator "$ADDR" --id "$w" 2> "$WORK/$w.log" > /dev/null &
done
"$BIN/coordinator/qctl/qctl" submit --coordinator "$ADDR" "${FLAGS[@]}" --expert-shards 2 \
  --out "$WORK/service"
start=$(date +%s)
"$BIN/coordinator/qctl/qctl" watch 1 --coordinator "$ADDR"
echo "service: $(( $(date +%s) - start )) s"
echo "--- qctl logs 1 (first and last lines)"
"$BIN/coordinator/qctl/qctl" logs 1 --coordinator "$ADDR" | sed -n '1,4p;$p'
echo "--- coordinator /metrics (excerpt)"
curl -s "http://$HTTP/metrics" | grep -E '^quant_(jobs|workers|gang_formations_total|task_outcomes_total)' || true
start=$(date +%s)
"$BIN/coordinator/qctl/qctl" quantize "${FLAGS[@]}" --out "$WORK/embedded" > "$WORK/embedded.log"
echo "embedded: $(( $(date +%s) - start )) s"
echo "--- byte comparison (service vs embedded)"
for f in "$WORK/embedded"/*; do
  name="$(basename "$f")"
  [ "$name" = report.json ] && continue
  if cmp -s "$f" "$WORK/service/$name"; then echo "identical $name"; else echo "DIFFERENT $name"; fi
done
python3 - "$WORK/service/report.json" "$WORK/embedded/report.json" <<'PY'
import json, sys
for path, label in zip(sys.argv[1:], ["service", "embedded"]):
    e = json.load(open(path)).get("eval", {})
    print(label, "eval:", {k: round(e[k][0], 5) for k in ("kl", "ear", "ppl") if k in e})
PY
