#!/usr/bin/env bash
# The README's main job, without the install and build: GSQ 3-bit on tiny-qwen3-moe, written as
# a vLLM (compressed-tensors) checkpoint and evaluated against the original.
#   OUT        output directory (default out/tiny-qwen3-moe-gsq-3bit; parents are created; an
#              earlier output of this job there is replaced)
#   QCTL       the qctl binary (default: the build's)
#   JOB_ARGS   the method's flags (default "--method gsq --bits 3"); ctest's smoke of this script
#              passes a cheap method and a short evaluation text
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-2}"
OUT="${OUT:-$ROOT/out/tiny-qwen3-moe-gsq-3bit}"
QCTL="${QCTL:-${BUILD_DIR:-$ROOT/build}/coordinator/qctl/qctl}"
read -r -a job_args <<< "${JOB_ARGS:---method gsq --bits 3}"
exec "$QCTL" quantize --model "$ROOT/../shared/models/tiny-qwen3-moe" --out "$OUT" \
  "${job_args[@]}" --overwrite
