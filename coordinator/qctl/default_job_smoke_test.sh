#!/usr/bin/env bash
# Smoke of the README's first command: scripts/default-job.sh (what run-default.sh runs after the
# build) into a nested output folder that does not exist yet, with a cheap method and a short
# evaluation text; then once more onto its own output, as a second run of the command does.
# Usage: default_job_smoke_test.sh QCTL_BINARY SHARED_DIR
set -euo pipefail
QCTL="$1"; SHARED="$2"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
head -c 3000 "$SHARED/data/eval/kjv_val.txt" > "$tmp/short.txt"
out="$tmp/not/yet/there/out"
for run in first second; do
  QCTL="$QCTL" OUT="$out" \
    JOB_ARGS="--method rtn --bits 4 --calib-tokens 2048 --eval-text $tmp/short.txt" \
    bash "$HERE/scripts/default-job.sh" > "$tmp/stdout" 2> "$tmp/stderr" || {
      echo "FAIL: $run run exited non-zero"; cat "$tmp/stderr"; exit 1; }
  for want in "perplexity" "ear" "flip_rate" "report"; do
    grep -q "$want" "$tmp/stdout" || { echo "FAIL: $run run printed no $want"; cat "$tmp/stdout"; exit 1; }
  done
  for f in config.json model.safetensors.index.json quant_manifest.json report.json; do
    [[ -f "$out/$f" ]] || { echo "FAIL: $run run left no $out/$f"; exit 1; }
  done
  # Nothing beside the output: no staging or probe directory left in its parent.
  [[ "$(ls -A "$(dirname "$out")")" == "out" ]] || {
    echo "FAIL: $run run left: $(ls -A "$(dirname "$out")")"; exit 1; }
done
echo "default job smoke: 2 passed, 0 failed"
