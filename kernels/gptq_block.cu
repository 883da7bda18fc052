// GPTQ block step on the GPU: a thread per row, kRows rows of one member per thread block. The
// member's block of U (count x count, up to 64 KiB) and the rows' weights (padded by one word:
// no bank conflicts) sit in shared memory; every thread walks its row's columns in order, reading
// U's row i as a broadcast.
#include <cuda_runtime.h>

#include "kernels/gptq_block_cuda.h"

namespace quant::kernels {
namespace {

constexpr int kRows = 64;

__global__ void GptqBlockKernel(GptqBlockArgs a) {
  extern __shared__ float shared[];
  const int64_t n = a.count;
  float* u = shared;                  // [n * n]
  float* ws = shared + n * n;         // [kRows][n + 1]
  const int64_t blocks_per_member = (a.rows + kRows - 1) / kRows;
  const int64_t m = blockIdx.x / blocks_per_member;
  const int64_t r0 = (blockIdx.x % blocks_per_member) * kRows;
  const float* ug = a.hinv + m * n * n;
  for (int64_t k = threadIdx.x; k < n * n; k += blockDim.x) u[k] = ug[k];
  const int64_t rows_here = min(static_cast<int64_t>(kRows), a.rows - r0);
  for (int64_t k = threadIdx.x; k < rows_here * n; k += blockDim.x) {
    const int64_t r = k / n, c = k % n;
    ws[r * (n + 1) + c] = a.w[(m * a.rows + r0 + r) * n + c];
  }
  __syncthreads();
  const int t = threadIdx.x;
  if (t < rows_here) {
    const int64_t row = m * a.rows + r0 + t;
    float* w = ws + t * (n + 1);
    const float* s = a.scales + row * a.groups;
    const float* z = a.zeros + row * a.groups;
    for (int64_t i = 0; i < n; ++i) {
      const float e = GptqColumn(w[i], s[a.group_of_col[i]], z[a.group_of_col[i]], a.maxq,
                                 u[i * n + i], &a.codes[row * n + i]);
      a.err[row * n + i] = e;
      for (int64_t j = i + 1; j < n; ++j) w[j] -= e * u[i * n + j];
    }
  }
  __syncthreads();
  for (int64_t k = threadIdx.x; k < rows_here * n; k += blockDim.x) {
    const int64_t r = k / n, c = k % n;
    a.w[(m * a.rows + r0 + r) * n + c] = ws[r * (n + 1) + c];
  }
}

}  // namespace

cudaError_t GptqBlockCuda(const GptqBlockArgs& a, cudaStream_t stream) {
  if (a.count <= 0 || a.count > kGptqMaxBlock || a.rows <= 0 || a.members <= 0) {
    return a.count == 0 ? cudaSuccess : cudaErrorInvalidValue;
  }
  const size_t smem = sizeof(float) * (a.count * a.count + kRows * (a.count + 1));
  cudaError_t e = cudaFuncSetAttribute(GptqBlockKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem));
  if (e != cudaSuccess) return e;
  const int64_t blocks = a.members * ((a.rows + kRows - 1) / kRows);
  GptqBlockKernel<<<static_cast<unsigned>(blocks), kRows, smem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace quant::kernels
