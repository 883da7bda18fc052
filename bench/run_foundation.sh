#!/usr/bin/env bash
# Runs every measurement of the foundation issue (issue 7): parity with the shared references,
# the RTN anchor table, and speed/memory against floors measured in the same run. One JSON line
# per measurement on stdout, progress on stderr. Builds nothing: run `bash scripts/build.sh` first.
# Usage: bash bench/run_foundation.sh [--skip-anchor] [--repeats N] [--only evals,read,...] > f.jsonl
#        python3 bench/foundation_tables.py f.jsonl    (the tables of docs/)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [[ ! -d "${BUILD_DIR:-build}" ]]; then
  echo "run_foundation: ./build is missing: run 'bash scripts/build.sh' first" >&2
  exit 1
fi
# 2 BLAS threads on this 2-core machine (libtorch's at::set_num_threads does not govern OpenBLAS).
export OPENBLAS_NUM_THREADS=2
exec python3 "$ROOT/bench/foundation.py" "$@"
