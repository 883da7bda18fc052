#include <cuda_runtime.h>

#include "kernels/pack_cuda.h"

namespace quant::kernels {
namespace {

__device__ __forceinline__ int64_t BitOf(const PackStreams& p, int64_t j) {
  if (!p.word_aligned) return j * p.bits;
  const int64_t per_word = 32 / p.bits;
  return (j / per_word) * 32 + (j % per_word) * p.bits;
}

// Word w of stream s: every value whose bits touch [32 w, 32 w + 32).
__global__ void PackKernel(PackStreams p, int64_t nwords, const uint8_t* __restrict__ codes,
                           int32_t* __restrict__ words) {
  const uint32_t mask = (1u << p.bits) - 1u;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       idx < p.streams * nwords; idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t s = idx / nwords, w = idx % nwords;
    const int64_t bit0 = 32 * w;
    int64_t j0, j1;
    if (p.word_aligned) {
      const int64_t per_word = 32 / p.bits;
      j0 = w * per_word;
      j1 = j0 + per_word;
    } else {
      j0 = bit0 / p.bits;
      j1 = (bit0 + 32 + p.bits - 1) / p.bits;
    }
    j1 = j1 < p.count ? j1 : p.count;
    uint32_t out = 0;
    for (int64_t j = j0; j < j1; ++j) {
      const uint32_t v = codes[s * p.code_stream_stride + j * p.code_elem_stride] & mask;
      const int64_t pos = BitOf(p, j) - bit0;  // in (-bits, 32)
      out |= pos >= 0 ? (v << pos) : (v >> -pos);
    }
    words[s * p.word_stream_stride + w * p.word_elem_stride] = static_cast<int32_t>(out);
  }
}

__global__ void UnpackKernel(PackStreams p, const int32_t* __restrict__ words,
                             uint8_t* __restrict__ codes) {
  const uint32_t mask = (1u << p.bits) - 1u;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       idx < p.streams * p.count; idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t s = idx / p.count, j = idx % p.count;
    const int64_t bit = BitOf(p, j);
    const int64_t w = bit / 32;
    const int shift = static_cast<int>(bit % 32);
    uint32_t v = static_cast<uint32_t>(words[s * p.word_stream_stride + w * p.word_elem_stride]) >>
                 shift;
    if (shift + p.bits > 32) {  // straddles into the next word (dense layout only)
      v |= static_cast<uint32_t>(
               words[s * p.word_stream_stride + (w + 1) * p.word_elem_stride])
           << (32 - shift);
    }
    codes[s * p.code_stream_stride + j * p.code_elem_stride] = static_cast<uint8_t>(v & mask);
  }
}

unsigned Blocks(int64_t n) {
  const int64_t b = (n + 255) / 256;
  return static_cast<unsigned>(b < 65535 ? (b > 0 ? b : 1) : 65535);
}

}  // namespace

cudaError_t PackCuda(const PackStreams& p, const uint8_t* codes, int32_t* words,
                     cudaStream_t stream) {
  if (p.bits < 1 || p.bits > 8) return cudaErrorInvalidValue;
  const int64_t nwords = PackWords(p.count, p.bits, p.word_aligned);
  if (p.streams * nwords == 0) return cudaSuccess;
  PackKernel<<<Blocks(p.streams * nwords), 256, 0, stream>>>(p, nwords, codes, words);
  return cudaGetLastError();
}

cudaError_t UnpackCuda(const PackStreams& p, const int32_t* words, uint8_t* codes,
                       cudaStream_t stream) {
  if (p.bits < 1 || p.bits > 8) return cudaErrorInvalidValue;
  if (p.streams * p.count == 0) return cudaSuccess;
  UnpackKernel<<<Blocks(p.streams * p.count), 256, 0, stream>>>(p, words, codes);
  return cudaGetLastError();
}

}  // namespace quant::kernels
