// GPTQ block step on the GPU: a thread per row, kRows rows of one member per thread block. The
// member's block of U (count x count, up to 66 KiB, stored transposed), the rows' weights (padded
// by one word: no bank conflicts) and the column-to-group table sit in shared memory. Each thread
// walks its row's columns kChunk at a time: the chunk's weights are quantized from registers,
// then the chunk's errors reach every later column in one pass (one load and store of w[j] per
// kChunk updates, U's column j read as two 16-byte broadcasts, four columns in flight). Per
// element the updates come in the same order and round the same way as GptqBlock_ref
// (--fmad=false): bit-identical.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/gptq_block_cuda.h"

namespace quant::kernels {
namespace {

// 256 rows: 8 warps per SM with the largest block (66 KiB of U + 129 KiB of rows); 64 rows (4
// warps of two blocks) left the shared-memory pipe idle waiting on latency.
constexpr int kRows = 256;
constexpr int kWarps = kRows / 32;
// Columns per register chunk: 8 U entries of column j are two float4 loads.
constexpr int kChunk = 8;
// Rows a warp copies per step between global and shared memory: kLoadRows x 4 loads in flight
// per thread (a row of up to 128 floats is 4 per lane), not one at a time.
constexpr int kLoadRows = 4;
constexpr int kPerLane = kGptqMaxBlock / 32;

// U's row stride in shared memory: a multiple of 4 floats (16-byte loads) that is 4 mod 8, so
// the transposing stores of 32 consecutive columns spread over 8 banks (not one).
__host__ __device__ constexpr int UStride(int n) { return ((n + 3) & ~3) | 4; }

// Copies rows [0, nrows) x columns [0, ncols) of a row-major global matrix (row stride src_ld)
// into shared memory, dst[r * dst_ld + c] or, transposed, dst[c * dst_ld + r]; a warp per row.
template <bool kTransposed>
__device__ void LoadRows(const float* __restrict__ src, int64_t src_ld, int nrows, int ncols,
                         float* __restrict__ dst, int dst_ld) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int r0 = warp * kLoadRows; r0 < nrows; r0 += kWarps * kLoadRows) {
    float v[kLoadRows][kPerLane];
#pragma unroll
    for (int b = 0; b < kLoadRows; ++b) {
#pragma unroll
      for (int q = 0; q < kPerLane; ++q) {
        const int r = r0 + b, c = lane + 32 * q;
        v[b][q] = r < nrows && c < ncols ? src[r * src_ld + c] : 0.0f;
      }
    }
#pragma unroll
    for (int b = 0; b < kLoadRows; ++b) {
#pragma unroll
      for (int q = 0; q < kPerLane; ++q) {
        const int r = r0 + b, c = lane + 32 * q;
        if (r < nrows && c < ncols) dst[kTransposed ? c * dst_ld + r : r * dst_ld + c] = v[b][q];
      }
    }
  }
}

__device__ void StoreRows(const float* __restrict__ src, int src_ld, int nrows, int ncols,
                          float* __restrict__ dst, int64_t dst_ld) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int r = warp; r < nrows; r += kWarps) {
#pragma unroll
    for (int q = 0; q < kPerLane; ++q) {
      const int c = lane + 32 * q;
      if (c < ncols) dst[r * dst_ld + c] = src[r * src_ld + c];
    }
  }
}

// x minus the chunk's 8 errors times U's column (a0, a1), in the reference's order.
__device__ __forceinline__ float Apply8(float x, const float (&e)[kChunk], float4 a0, float4 a1) {
  x -= e[0] * a0.x;
  x -= e[1] * a0.y;
  x -= e[2] * a0.z;
  x -= e[3] * a0.w;
  x -= e[4] * a1.x;
  x -= e[5] * a1.y;
  x -= e[6] * a1.z;
  x -= e[7] * a1.w;
  return x;
}

// kVec: count is a multiple of kChunk and w0/err (16 bytes) and codes (8 bytes) are aligned for
// every chunk of every row: the chunk's w0 is two float4 loads (fetched a chunk ahead), its
// errors two float4 stores and its codes one 8-byte store, instead of 8 scattered accesses each.
template <bool kVec>
__global__ void __launch_bounds__(kRows) GptqBlockKernel(GptqBlockArgs a) {
  extern __shared__ float4 shared4[];  // float4: 16-byte alignment for the U loads
  float* shared = reinterpret_cast<float*>(shared4);
  const int n = static_cast<int>(a.count);
  const int nu = UStride(n);
  float* ut = shared;                 // [n][nu]: ut[j * nu + i] = U[i][j]
  float* ws = shared + n * nu;        // [kRows][n + 1]
  int* goc = reinterpret_cast<int*>(ws + kRows * (n + 1));  // [n]
  const int64_t ld_w = a.ld_w > 0 ? a.ld_w : n, ld_w0 = a.ld_w0 > 0 ? a.ld_w0 : n;
  const int64_t ld_err = a.ld_err > 0 ? a.ld_err : n, ld_codes = a.ld_codes > 0 ? a.ld_codes : n;
  const int64_t blocks_per_member = (a.rows + kRows - 1) / kRows;
  const int64_t m = blockIdx.x / blocks_per_member;
  const int64_t r0 = (blockIdx.x % blocks_per_member) * kRows;
  const int rows_here = static_cast<int>(min(static_cast<int64_t>(kRows), a.rows - r0));
  LoadRows<true>(a.hinv + m * n * n, n, n, n, ut, nu);
  LoadRows<false>(a.w + (m * a.rows + r0) * ld_w, ld_w, rows_here, n, ws, n + 1);
  for (int i = threadIdx.x; i < n; i += kRows) goc[i] = a.group_of_col[i];
  __syncthreads();
  const int t = threadIdx.x;
  if (t < rows_here) {
    const int64_t row = m * a.rows + r0 + t;
    float* w = ws + t * (n + 1);
    const float* s = a.scales + row * a.groups;
    const float* z = a.zeros + row * a.groups;
    const float* w0 = a.w0 != nullptr ? a.w0 + row * ld_w0 : nullptr;
    float* err = a.err + row * ld_err;
    uint8_t* codes = a.codes + row * ld_codes;
    float4 next0 = make_float4(0, 0, 0, 0), next1 = next0;  // kVec: the coming chunk's w0
    if (kVec && w0 != nullptr) {
      next0 = *reinterpret_cast<const float4*>(w0);
      next1 = *reinterpret_cast<const float4*>(w0 + 4);
    }
    for (int i0 = 0; i0 < n; i0 += kChunk) {
      float r[kChunk], e[kChunk], o[kChunk];
      uint8_t q[kChunk];
#pragma unroll
      for (int c = 0; c < kChunk; ++c) r[c] = i0 + c < n ? w[i0 + c] : 0.0f;
      if (kVec && w0 != nullptr) {
        o[0] = next0.x, o[1] = next0.y, o[2] = next0.z, o[3] = next0.w;
        o[4] = next1.x, o[5] = next1.y, o[6] = next1.z, o[7] = next1.w;
        if (i0 + kChunk < n) {
          next0 = *reinterpret_cast<const float4*>(w0 + i0 + kChunk);
          next1 = *reinterpret_cast<const float4*>(w0 + i0 + kChunk + 4);
        }
      } else {
#pragma unroll
        for (int c = 0; c < kChunk; ++c) o[c] = w0 != nullptr && i0 + c < n ? w0[i0 + c] : 0.0f;
      }
#pragma unroll
      for (int c = 0; c < kChunk; ++c) {
        const int i = i0 + c;
        e[c] = 0.0f;
        q[c] = 0;
        if (i < n) {
          const int g = goc[i];
          e[c] = w0 != nullptr ? GptqColumnFromOriginal(r[c], o[c], s[g], z[g], a.maxq, &q[c])
                               : GptqColumn(r[c], s[g], z[g], a.maxq, ut[i * nu + i], &q[c]);
#pragma unroll
          for (int b = c + 1; b < kChunk; ++b) {
            if (i0 + b < n) r[b] -= e[c] * ut[(i0 + b) * nu + i];
          }
        }
      }
      if (kVec) {
        *reinterpret_cast<float4*>(err + i0) = make_float4(e[0], e[1], e[2], e[3]);
        *reinterpret_cast<float4*>(err + i0 + 4) = make_float4(e[4], e[5], e[6], e[7]);
        uint2 packed;
        packed.x = q[0] | q[1] << 8 | q[2] << 16 | static_cast<uint32_t>(q[3]) << 24;
        packed.y = q[4] | q[5] << 8 | q[6] << 16 | static_cast<uint32_t>(q[7]) << 24;
        *reinterpret_cast<uint2*>(codes + i0) = packed;
      } else {
#pragma unroll
        for (int c = 0; c < kChunk; ++c) {
          if (i0 + c < n) {
            err[i0 + c] = e[c];
            codes[i0 + c] = q[c];
          }
        }
      }
#pragma unroll
      for (int c = 0; c < kChunk; ++c) {
        if (i0 + c < n) w[i0 + c] = r[c];
      }
      // The rest of the block (only after a full chunk: a partial one is the last), four
      // columns at a time: their loads first, four independent chains, then their stores.
      const float* uc = ut + i0;
      int j = i0 + kChunk;
      for (; j + 3 < n; j += 4) {
        const float4 a0 = *reinterpret_cast<const float4*>(uc + j * nu);
        const float4 a1 = *reinterpret_cast<const float4*>(uc + j * nu + 4);
        const float4 b0 = *reinterpret_cast<const float4*>(uc + (j + 1) * nu);
        const float4 b1 = *reinterpret_cast<const float4*>(uc + (j + 1) * nu + 4);
        const float4 c0 = *reinterpret_cast<const float4*>(uc + (j + 2) * nu);
        const float4 c1 = *reinterpret_cast<const float4*>(uc + (j + 2) * nu + 4);
        const float4 d0 = *reinterpret_cast<const float4*>(uc + (j + 3) * nu);
        const float4 d1 = *reinterpret_cast<const float4*>(uc + (j + 3) * nu + 4);
        const float x0 = w[j], x1 = w[j + 1], x2 = w[j + 2], x3 = w[j + 3];
        w[j] = Apply8(x0, e, a0, a1);
        w[j + 1] = Apply8(x1, e, b0, b1);
        w[j + 2] = Apply8(x2, e, c0, c1);
        w[j + 3] = Apply8(x3, e, d0, d1);
      }
      for (; j < n; ++j) {
        const float4 a0 = *reinterpret_cast<const float4*>(uc + j * nu);
        const float4 a1 = *reinterpret_cast<const float4*>(uc + j * nu + 4);
        w[j] = Apply8(w[j], e, a0, a1);
      }
    }
  }
  __syncthreads();
  StoreRows(ws, n + 1, rows_here, n, a.w + (m * a.rows + r0) * ld_w, ld_w);
}

static_assert(kChunk == 8, "the rest-of-block loop reads U's chunk as two float4");
static_assert(kGptqMaxBlock % 32 == 0, "LoadRows gives each lane kGptqMaxBlock / 32 columns");

bool Aligned(const void* p, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

}  // namespace

cudaError_t GptqBlockCuda(const GptqBlockArgs& a, cudaStream_t stream) {
  if (a.count <= 0 || a.count > kGptqMaxBlock || a.rows <= 0 || a.members <= 0) {
    return a.count == 0 ? cudaSuccess : cudaErrorInvalidValue;
  }
  const int n = static_cast<int>(a.count);
  const int64_t ld_w0 = a.ld_w0 > 0 ? a.ld_w0 : n, ld_err = a.ld_err > 0 ? a.ld_err : n;
  const int64_t ld_codes = a.ld_codes > 0 ? a.ld_codes : n;
  if ((a.ld_w > 0 && a.ld_w < n) || ld_w0 < n || ld_err < n || ld_codes < n) {
    return cudaErrorInvalidValue;
  }
  const bool vec = n % kChunk == 0 && ld_err % 4 == 0 && Aligned(a.err, 16) &&
                   ld_codes % 8 == 0 && Aligned(a.codes, 8) &&
                   (a.w0 == nullptr || (ld_w0 % 4 == 0 && Aligned(a.w0, 16)));
  const size_t smem = sizeof(float) * (n * UStride(n) + kRows * (n + 1)) + sizeof(int) * n;
  auto kernel = vec ? GptqBlockKernel<true> : GptqBlockKernel<false>;
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem));
  if (e != cudaSuccess) return e;
  const int64_t blocks = a.members * ((a.rows + kRows - 1) / kRows);
  kernel<<<static_cast<unsigned>(blocks), kRows, smem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace quant::kernels
