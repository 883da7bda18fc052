#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job on the embedded default.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/install-deps.sh"
bash "$ROOT/scripts/build.sh"
export OPENBLAS_NUM_THREADS=2
"${BUILD_DIR:-$ROOT/build}/coordinator/qctl/qctl" eval --model "$ROOT/../shared/models/tiny-qwen3-moe" \
  --fake-quant rtn --bits 3 --grid asym --scope experts
