// GPTQ block step on the GPU: a thread per row, kRows rows of one member per thread block. The
// member's block of U (count x count, up to 64 KiB, stored transposed) and the rows' weights
// (padded by one word: no bank conflicts) sit in shared memory. Each thread walks its row's
// columns kChunk at a time: the chunk's weights are quantized from registers, then the chunk's
// errors reach every later column in one pass (one load and store of w[j] per kChunk updates,
// U's column j read as two 16-byte broadcasts). Per element the updates come in the same order
// and round the same way as GptqBlock_ref (--fmad=false): bit-identical.
#include <cuda_runtime.h>

#include "kernels/gptq_block_cuda.h"

namespace quant::kernels {
namespace {

// 256 rows: 8 warps per SM with the largest block (64 KiB of U + 129 KiB of rows); 64 rows (4
// warps of two blocks) left the shared-memory pipe idle waiting on latency.
constexpr int kRows = 256;
// Columns per register chunk: 8 U entries of column j are two float4 loads.
constexpr int kChunk = 8;

__global__ void __launch_bounds__(kRows) GptqBlockKernel(GptqBlockArgs a) {
  extern __shared__ float4 shared4[];  // float4: 16-byte alignment for the U loads
  float* shared = reinterpret_cast<float*>(shared4);
  const int n = static_cast<int>(a.count);
  const int nu = (n + 3) & ~3;        // U's row stride: a multiple of 4 floats
  float* ut = shared;                 // [n][nu]: ut[j * nu + i] = U[i][j]
  float* ws = shared + n * nu;        // [kRows][n + 1]
  const int64_t blocks_per_member = (a.rows + kRows - 1) / kRows;
  const int64_t m = blockIdx.x / blocks_per_member;
  const int64_t r0 = (blockIdx.x % blocks_per_member) * kRows;
  const float* ug = a.hinv + m * n * n;
  for (int k = threadIdx.x; k < n * n; k += blockDim.x) {
    const int j = k / n, i = k % n;  // contiguous shared stores; strided reads hit L2
    ut[j * nu + i] = ug[i * n + j];
  }
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
    for (int i0 = 0; i0 < n; i0 += kChunk) {
      float r[kChunk], e[kChunk];
#pragma unroll
      for (int c = 0; c < kChunk; ++c) r[c] = i0 + c < n ? w[i0 + c] : 0.0f;
#pragma unroll
      for (int c = 0; c < kChunk; ++c) {
        const int i = i0 + c;
        e[c] = 0.0f;
        if (i < n) {
          const int g = a.group_of_col[i];
          e[c] = a.w0 != nullptr ? GptqColumnFromOriginal(r[c], a.w0[row * n + i], s[g], z[g],
                                                          a.maxq, &a.codes[row * n + i])
                                 : GptqColumn(r[c], s[g], z[g], a.maxq, ut[i * nu + i],
                                              &a.codes[row * n + i]);
          a.err[row * n + i] = e[c];
#pragma unroll
          for (int b = c + 1; b < kChunk; ++b) {
            if (i0 + b < n) r[b] -= e[c] * ut[(i0 + b) * nu + i];
          }
        }
      }
#pragma unroll
      for (int c = 0; c < kChunk; ++c) {
        if (i0 + c < n) w[i0 + c] = r[c];
      }
      // The rest of the block (only after a full chunk: a partial one is the last).
      int j = i0 + kChunk;
      for (; j + 1 < n; j += 2) {
        const float4 a0 = *reinterpret_cast<const float4*>(ut + j * nu + i0);
        const float4 a1 = *reinterpret_cast<const float4*>(ut + j * nu + i0 + 4);
        const float4 b0 = *reinterpret_cast<const float4*>(ut + (j + 1) * nu + i0);
        const float4 b1 = *reinterpret_cast<const float4*>(ut + (j + 1) * nu + i0 + 4);
        float x = w[j], y = w[j + 1];
        x -= e[0] * a0.x; y -= e[0] * b0.x;
        x -= e[1] * a0.y; y -= e[1] * b0.y;
        x -= e[2] * a0.z; y -= e[2] * b0.z;
        x -= e[3] * a0.w; y -= e[3] * b0.w;
        x -= e[4] * a1.x; y -= e[4] * b1.x;
        x -= e[5] * a1.y; y -= e[5] * b1.y;
        x -= e[6] * a1.z; y -= e[6] * b1.z;
        x -= e[7] * a1.w; y -= e[7] * b1.w;
        w[j] = x;
        w[j + 1] = y;
      }
      if (j < n) {
        const float4 a0 = *reinterpret_cast<const float4*>(ut + j * nu + i0);
        const float4 a1 = *reinterpret_cast<const float4*>(ut + j * nu + i0 + 4);
        float x = w[j];
        x -= e[0] * a0.x;
        x -= e[1] * a0.y;
        x -= e[2] * a0.z;
        x -= e[3] * a0.w;
        x -= e[4] * a1.x;
        x -= e[5] * a1.y;
        x -= e[6] * a1.z;
        x -= e[7] * a1.w;
        w[j] = x;
      }
    }
  }
  __syncthreads();
  for (int64_t k = threadIdx.x; k < rows_here * n; k += blockDim.x) {
    const int64_t r = k / n, c = k % n;
    a.w[(m * a.rows + r0 + r) * n + c] = ws[r * (n + 1) + c];
  }
}

static_assert(kChunk == 8, "the rest-of-block loop reads U's chunk as two float4");

}  // namespace

cudaError_t GptqBlockCuda(const GptqBlockArgs& a, cudaStream_t stream) {
  if (a.count <= 0 || a.count > kGptqMaxBlock || a.rows <= 0 || a.members <= 0) {
    return a.count == 0 ? cudaSuccess : cudaErrorInvalidValue;
  }
  const int64_t nu = (a.count + 3) & ~int64_t{3};
  const size_t smem = sizeof(float) * (a.count * nu + kRows * (a.count + 1));
  cudaError_t e = cudaFuncSetAttribute(GptqBlockKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem));
  if (e != cudaSuccess) return e;
  const int64_t blocks = a.members * ((a.rows + kRows - 1) / kRows);
  GptqBlockKernel<<<static_cast<unsigned>(blocks), kRows, smem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace quant::kernels
