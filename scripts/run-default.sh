#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job on the embedded default: GSQ 3-bit on
# tiny-qwen3-moe, written as a vLLM (compressed-tensors) checkpoint and evaluated against the
# original. Set OUT to choose the output directory (replaced if it exists).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/install-deps.sh"
bash "$ROOT/scripts/build.sh"
export OPENBLAS_NUM_THREADS=2
OUT="${OUT:-$ROOT/out/tiny-qwen3-moe-gsq-3bit}"
"${BUILD_DIR:-$ROOT/build}/coordinator/qctl/qctl" quantize \
  --model "$ROOT/../shared/models/tiny-qwen3-moe" --out "$OUT" --method gsq --bits 3 --overwrite
