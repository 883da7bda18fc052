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
# The service (quant-coordinator, quant-worker, qctl submit) for the two-GPU run: gRPC and
# Protobuf with their compilers, SQLite, cpp-httplib, Gloo (and what they link).
apt-get download libgrpc++-dev libgrpc++1.51 libgrpc-dev libgrpc29 protobuf-compiler-grpc \
  libprotobuf-dev libprotobuf32 libprotoc32 protobuf-compiler libc-ares-dev libc-ares2 \
  libre2-dev libre2-9 libcpp-httplib-dev libcpp-httplib0.11 libsqlite3-dev libsqlite3-0 \
  libgloo-dev libgloo0 libbrotli-dev libbrotli1 zlib1g-dev zlib1g \
  libhiredis0.14 libibverbs1 libnl-3-200 libnl-route-3-200
ls -la
