#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job on the embedded default
# (scripts/default-job.sh: GSQ 3-bit on tiny-qwen3-moe, vLLM export, evaluated against the
# original). Set OUT to choose the output directory.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/install-deps.sh"
bash "$ROOT/scripts/build.sh"
exec bash "$ROOT/scripts/default-job.sh"
