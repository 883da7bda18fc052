#!/usr/bin/env bash
# Downloads (here, where the Debian registry is reachable) the Debian 12 packages the GPU machine
# lacks, into .debs/ (ignored by git; `carry` it to the GPU machine). scripts/gpu-build.sh
# extracts them into a prefix there, never into /.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$ROOT/.debs"
grep -qxF '/.debs/' "$ROOT/.git/info/exclude" 2>/dev/null || echo '/.debs/' >> "$ROOT/.git/info/exclude"
cd "$ROOT/.debs"
# What the GPU machine's image (Ubuntu 24.04) was seen to lack: Abseil, nlohmann-json, CLI11,
# Oniguruma's headers, GoogleMock.
apt-get download libabsl-dev libabsl20220623 nlohmann-json3-dev libcli11-dev libonig-dev \
  libonig5 libgmock-dev libgtest-dev
ls -la
