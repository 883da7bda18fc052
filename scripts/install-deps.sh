#!/usr/bin/env bash
# Installs the Debian 12 packages the build and the tests need (DESIGN.md section 3).
# Idempotent: packages already present are skipped by apt-get; safe to run on every CI run.
set -euo pipefail
PKGS=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev libopenblas0-pthread
  libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev
  libonig-dev libsqlite3-dev sqlite3
  libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc
  libcpp-httplib-dev libcurl4-openssl-dev libssl-dev libxxhash-dev
  libgloo-dev gnuplot-nox python3 openssl  # openssl: the TLS test makes its own CA
  prometheus  # promtool: the metrics tests check our exposition with it
  python3-botocore awscli  # the S3 tests: AWS's signature code in a checking proxy; aws reads back
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Node and npm for the manifest validation (tests/deploy: kubernetes-models): the image's own
# when there is one, else Debian's; then the pinned packages (package-lock.json), once.
if ! command -v npm > /dev/null; then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for dir in tests/deploy tests/s3; do  # kubernetes-models; s3rver
  if [[ ! -d "$ROOT/$dir/node_modules" ]]; then
    (cd "$ROOT/$dir" && npm ci --no-audit --no-fund --silent)
  fi
done
