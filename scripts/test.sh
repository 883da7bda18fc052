#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite with ctest.
# Usage: scripts/test.sh [ctest args...]   (e.g. -LE slow for the fast loop)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/install-deps.sh"
bash "$ROOT/scripts/build.sh"
cd "${BUILD_DIR:-$ROOT/build}"
# One OpenBLAS thread per test process: ctest -j2 runs two at once on two cores, and spinning
# BLAS threads beyond the cores cost CPU (cmake/QuantTest.cmake says more).
export OPENBLAS_NUM_THREADS=1
ctest --output-on-failure -j2 --timeout 1500 "$@"
