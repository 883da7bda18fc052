#!/usr/bin/env bash
# Builds the project on the GPU machine against the pip torch (2.11, CUDA 13) already installed
# there and the Debian 12 packages carried in .debs/ (scripts/fetch-gpu-debs.sh), extracted into a
# prefix, never into /. Prints the environment that the binaries need to run.
# Usage (on the GPU machine, from the repository root): bash scripts/gpu-build.sh [targets...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${QUANT_GPU_PREFIX:-/tmp/quant-prefix}"
BUILD="${BUILD_DIR:-$ROOT/build-gpu}"
mkdir -p "$PREFIX"
for f in "$ROOT"/.debs/*.deb; do dpkg -x "$f" "$PREFIX"; done
# Gloo's CMake targets name their library by absolute path: point them into the prefix.
for f in "$PREFIX"/usr/share/cmake/Gloo/GlooTargets-*.cmake; do
  [ -e "$f" ] && sed -i "s|\"/usr/lib/libgloo|\"$PREFIX/usr/lib/libgloo|g" "$f"
done
export LD_LIBRARY_PATH="$PREFIX/usr/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"  # libgloo
TORCH_CMAKE="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
# NCCL: the one pip installed beside torch (nvidia-nccl), which torch itself loads.
NCCL_ROOT="$(python3 -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' \
  2>/dev/null || true)"
export PKG_CONFIG_PATH="$PREFIX/usr/lib/x86_64-linux-gnu/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR="$PREFIX"   # the carried .pc files say prefix=/usr
export LD_LIBRARY_PATH="$PREFIX/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$PREFIX/usr/bin:$PATH"   # protoc and grpc_cpp_plugin
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_PREFIX_PATH="$PREFIX/usr;$TORCH_CMAKE" -DQUANT_WITH_CUDA=ON \
  -DQUANT_SHARED_DIR="${QUANT_SHARED_DIR:-$ROOT/shared}" ${NCCL_ROOT:+-DNCCL_ROOT="$NCCL_ROOT"}
if (($#)); then
  cmake --build "$BUILD" -j"$(nproc)" --target "$@"
else
  cmake --build "$BUILD" -j"$(nproc)"
fi
echo "run with: export LD_LIBRARY_PATH=$LD_LIBRARY_PATH${NCCL_ROOT:+:$NCCL_ROOT/lib}"
