// The bf16-state GSQ step (kernels/gsq_step_bf16.h): one warp per quantization group, each lane
// four consecutive elements per pass (8-byte loads of every level's bf16 logits, 4-byte loads of
// the uint8 start codes), the levels unrolled, the scale-gradient sum over a fixed shuffle tree.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/gsq_math.h"
#include "kernels/gsq_step_bf16.h"

namespace quant::kernels {
namespace {

using namespace gsq_math;

constexpr int kWarpsPerBlock = 8;
// 64 registers at most: four blocks of 256 threads per SM (half occupancy) keep the loads of
// one warp overlapping the arithmetic of others (the fused kernel: three, 85 registers, or it
// spills).
constexpr int kMinBlocks = 4;
constexpr int kMaxK = 5;
constexpr int kVec = 2;  // elements per lane per pass (more would cost occupancy)

struct Args {
  uint32_t n = 0;
  int64_t groups = 0;
  int group_size = 0;
  float max_code = 0;
  float off[kMaxK] = {};
  uint32_t key[kMaxK] = {};     // noise, per level
  uint32_t sr_key[kMaxK] = {};  // stochastic rounding of the logit update, per level
  float kappa_over_tau = 0, inv_tau = 0;
  uint32_t element_offset = 0;
};

Args MakeArgs(const GsqTensorsBf16& t, const GsqStepParams& p) {
  Args a;
  a.n = static_cast<uint32_t>(t.rows * t.cols);
  a.group_size = static_cast<int>(t.group_size);
  a.groups = t.rows * t.cols / t.group_size;
  a.max_code = static_cast<float>(t.max_code);
  const uint32_t step_key = StepKey(p.seed, p.step);
  const uint32_t sr_step_key = Mix32(step_key ^ 0x5bd1e995u);
  for (int k = 0; k < t.levels; ++k) {
    a.off[k] = t.offsets[k];
    a.key[k] = LevelKey(step_key, k);
    a.sr_key[k] = LevelKey(sr_step_key, k);
  }
  a.kappa_over_tau = p.kappa / p.tau;
  a.inv_tau = 1.0f / p.tau;
  a.element_offset = static_cast<uint32_t>(p.element_offset);
  return a;
}

bool Supported(const GsqTensorsBf16& t) {
  return t.group_size > 0 && t.group_size % kVec == 0 && t.cols % t.group_size == 0 &&
         t.rows * t.cols < (int64_t{1} << 32) &&
         ((t.levels == 4 && t.base == nullptr) || (t.levels == 5 && t.base != nullptr));
}

unsigned Blocks(int64_t groups) {
  return static_cast<unsigned>((groups + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

// Two bf16 values from one 4-byte load, and back.
struct Bf16x4 {
  float v[kVec];
};

__device__ __forceinline__ Bf16x4 Load4(const __nv_bfloat16* p) {
  const uint32_t raw = *reinterpret_cast<const uint32_t*>(p);
  Bf16x4 r;
  r.v[0] = __uint_as_float(raw << 16);
  r.v[1] = __uint_as_float(raw & 0xffff0000u);
  return r;
}

__device__ __forceinline__ uint32_t Pack2(uint16_t lo, uint16_t hi) {
  return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
}

__device__ __forceinline__ uint16_t NearestBits(float x) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(x));
}

__device__ __forceinline__ void Store4(__nv_bfloat16* p, const uint16_t (&bits)[kVec]) {
  *reinterpret_cast<uint32_t*>(p) = Pack2(bits[0], bits[1]);
}

// Near u = 1, -log(u) is tiny and __logf's absolute error (~2^-22) would swamp it (wrong or
// infinite Gumbel tails): there (t = 1 - u < 1/16, exact in float) the series
// -log(1 - t) = t + t^2/2 + ... + t^5/5 (relative error < t^5/6 < 2e-7); elsewhere __logf,
// whose relative error is then < 6e-6. The outer log's absolute error is harmless.
__device__ __forceinline__ float GumbelFast(float u) {
  const float t = 1.0f - u;
  const float series = t * (1.0f + t * (0.5f + t * (1.0f / 3.0f + t * (0.25f + t * 0.2f))));
  const float inner = t < 0.0625f ? series : -__logf(u + kEps);
  return -__logf(inner + kEps);
}

// The tempered softmax over element i's valid levels (logits l[k]); returns E[v].
template <int K>
__device__ __forceinline__ float SoftFast(const Args& a, const float (&l)[K], float b, uint32_t i,
                                          float (&prob)[K], float (&value)[K]) {
  float amax = kMasked;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const float v = b + a.off[k];
    value[k] = v;
    const bool valid = (v >= 0.0f) & (v <= a.max_code);
    const float g = GumbelFast(Uniform(a.key[k], i + a.element_offset));
    const float x = valid ? l[k] * a.kappa_over_tau + g * a.inv_tau : kMasked;
    prob[k] = x;
    amax = fmaxf(amax, x);
  }
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const float x = prob[k];
    prob[k] = x > 0.5f * kMasked ? __expf(x - amax) : 0.0f;
    sum += prob[k];
  }
  const float inv = __fdividef(1.0f, sum);
  float expected = 0.0f;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    prob[k] *= inv;
    expected += prob[k] * value[k];
  }
  return expected;
}

// Start codes of elements i0..i0+3 (zeros where there is no base: absolute levels).
__device__ __forceinline__ void LoadBase(const uint8_t* __restrict__ base, int64_t i0,
                                         float (&b)[kVec]) {
  if (base == nullptr) {
#pragma unroll
    for (int e = 0; e < kVec; ++e) b[e] = 0.0f;
    return;
  }
  const uint32_t raw = *reinterpret_cast<const uint16_t*>(base + i0);
#pragma unroll
  for (int e = 0; e < kVec; ++e) b[e] = static_cast<float>((raw >> (8 * e)) & 0xffu);
}

template <int K>
__global__ void __launch_bounds__(32 * kWarpsPerBlock, kMinBlocks) ForwardKernel(Args a, const __nv_bfloat16* __restrict__ logits,
                              const uint8_t* __restrict__ base, const float* __restrict__ scales,
                              const float* __restrict__ zeros, __nv_bfloat16* __restrict__ w_out,
                              const __nv_bfloat16* __restrict__ subtract) {
  const int lane = threadIdx.x & 31;
  const int64_t g = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (g >= a.groups) return;
  const float scale = scales[g], zero = zeros[g];
  for (int j = lane * kVec; j < a.group_size; j += 32 * kVec) {
    const int64_t i0 = g * a.group_size + j;
    Bf16x4 lv[K];
#pragma unroll
    for (int k = 0; k < K; ++k) lv[k] = Load4(logits + k * static_cast<int64_t>(a.n) + i0);
    float b[kVec];
    LoadBase(base, i0, b);
    Bf16x4 sub{};
    if (subtract != nullptr) sub = Load4(subtract + i0);
    uint16_t out[kVec];
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      float l[K], prob[K], value[K];
#pragma unroll
      for (int k = 0; k < K; ++k) l[k] = lv[k].v[e];
      const float expected =
          SoftFast<K>(a, l, b[e], static_cast<uint32_t>(i0 + e), prob, value);
      out[e] = NearestBits(scale * (expected - zero) - sub.v[e]);
    }
    Store4(w_out + i0, out);
  }
}

struct LionArgs {
  float de_scale, lr, decay, b1, b2;  // logits
  float lr_scales;                    // scales (no decay)
};

// One pass (kVec elements per lane) of backward + Lion on the logits; with kNext, also the next
// step's E[v] of each element from the updated (stored, rounded) logits into `next`.
template <int K, bool kNext>
__device__ __forceinline__ void StepPass(const Args& a, const Args& an, int64_t i0,
                                         __nv_bfloat16* __restrict__ logits,
                                         __nv_bfloat16* __restrict__ momentum,
                                         const uint8_t* __restrict__ base,
                                         const __nv_bfloat16* __restrict__ grad_w, float zero,
                                         float de_coef, const LionArgs& o, float& gsum,
                                         float (&next)[kVec]) {
  Bf16x4 lv[K], mv[K];
#pragma unroll
  for (int k = 0; k < K; ++k) {
    lv[k] = Load4(logits + k * static_cast<int64_t>(a.n) + i0);
    mv[k] = Load4(momentum + k * static_cast<int64_t>(a.n) + i0);
  }
  float b[kVec];
  LoadBase(base, i0, b);
  const Bf16x4 gw = Load4(grad_w + i0);
  uint16_t l_out[K][kVec], m_out[K][kVec];
#pragma unroll
  for (int e = 0; e < kVec; ++e) {
    float l[K], prob[K], value[K];
#pragma unroll
    for (int k = 0; k < K; ++k) l[k] = lv[k].v[e];
    const uint32_t i = static_cast<uint32_t>(i0 + e);
    const float expected = SoftFast<K>(a, l, b[e], i, prob, value);
    gsum += gw.v[e] * (expected - zero);
    const float de = gw.v[e] * de_coef;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const float grad = prob[k] * (value[k] - expected) * de;
      const float m = mv[k].v[e];
      const float update = Sign(o.b1 * m + (1.0f - o.b1) * grad);
      l_out[k][e] = StochasticRoundBf16Bits(l[k] * o.decay - o.lr * update, a.sr_key[k],
                                            i + a.element_offset);
      m_out[k][e] = NearestBits(o.b2 * m + (1.0f - o.b2) * grad);
    }
    if constexpr (kNext) {
#pragma unroll
      for (int k = 0; k < K; ++k) l[k] = __uint_as_float(static_cast<uint32_t>(l_out[k][e]) << 16);
      next[e] = SoftFast<K>(an, l, b[e], i, prob, value);
    }
  }
#pragma unroll
  for (int k = 0; k < K; ++k) {
    Store4(logits + k * static_cast<int64_t>(a.n) + i0, l_out[k]);
    Store4(momentum + k * static_cast<int64_t>(a.n) + i0, m_out[k]);
  }
}

__device__ __forceinline__ float WarpSum(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_down_sync(0xffffffffu, x, offset);
  return x;  // lane 0 holds the sum (a fixed tree: the same bits every run)
}

template <int K>
__global__ void __launch_bounds__(32 * kWarpsPerBlock, kMinBlocks) BackwardKernel(Args a, __nv_bfloat16* __restrict__ logits,
                               __nv_bfloat16* __restrict__ momentum,
                               const uint8_t* __restrict__ base, const float* __restrict__ scales,
                               const float* __restrict__ zeros,
                               const __nv_bfloat16* __restrict__ grad_w,
                               float* __restrict__ grad_scales, LionArgs o) {
  const int lane = threadIdx.x & 31;
  const int64_t g = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (g >= a.groups) return;
  const float zero = zeros[g], de_coef = scales[g] * o.de_scale;
  float gsum = 0.0f, unused[kVec];
  for (int j = lane * kVec; j < a.group_size; j += 32 * kVec) {
    StepPass<K, false>(a, a, g * a.group_size + j, logits, momentum, base, grad_w, zero, de_coef,
                       o, gsum, unused);
  }
  gsum = WarpSum(gsum);
  if (lane == 0) grad_scales[g] = gsum;
}

// Backward + Lion on the logits and on the group's scale, then the next step's soft weights.
constexpr int kMaxPasses = 4;  // group_size <= 4 * 32 * kVec = 512

template <int K>
__global__ void __launch_bounds__(32 * kWarpsPerBlock, kMinBlocks - 1) FusedKernel(Args a, Args an, __nv_bfloat16* __restrict__ logits,
                            __nv_bfloat16* __restrict__ momentum, const uint8_t* __restrict__ base,
                            float* __restrict__ scales, float* __restrict__ scale_momentum,
                            const float* __restrict__ zeros,
                            const __nv_bfloat16* __restrict__ grad_w, LionArgs o,
                            __nv_bfloat16* __restrict__ w_out,
                            const __nv_bfloat16* __restrict__ subtract) {
  const int lane = threadIdx.x & 31;
  const int64_t g = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (g >= a.groups) return;
  const float scale = scales[g], zero = zeros[g], de_coef = scale * o.de_scale;
  float gsum = 0.0f, next[kMaxPasses][kVec];
#pragma unroll
  for (int pass = 0; pass < kMaxPasses; ++pass) {  // unrolled: `next` stays in registers
    const int j = lane * kVec + pass * 32 * kVec;
    if (j < a.group_size) {
      StepPass<K, true>(a, an, g * a.group_size + j, logits, momentum, base, grad_w, zero,
                        de_coef, o, gsum, next[pass]);
    }
  }
  // Lane 0's sum on every lane, so every lane computes the same new scale.
  gsum = __shfl_sync(0xffffffffu, WarpSum(gsum), 0);
  const float m = scale_momentum[g];
  const float new_scale = scale - o.lr_scales * Sign(o.b1 * m + (1.0f - o.b1) * gsum);
  if (lane == 0) {
    scales[g] = new_scale;
    scale_momentum[g] = o.b2 * m + (1.0f - o.b2) * gsum;
  }
#pragma unroll
  for (int pass = 0; pass < kMaxPasses; ++pass) {
    const int j = lane * kVec + pass * 32 * kVec;
    if (j < a.group_size) {
      const int64_t i0 = g * a.group_size + j;
      Bf16x4 sub{};
      if (subtract != nullptr) sub = Load4(subtract + i0);
      uint16_t out[kVec];
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        out[e] = NearestBits(new_scale * (next[pass][e] - zero) - sub.v[e]);
      }
      Store4(w_out + i0, out);
    }
  }
}

template <int K>
__global__ void HardKernel(Args a, const __nv_bfloat16* __restrict__ logits,
                           const uint8_t* __restrict__ base, uint8_t* __restrict__ codes) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < a.n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float b = base != nullptr ? static_cast<float>(base[i]) : 0.0f;
    float best = kMasked, code = 0.0f;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const float v = b + a.off[k];
      const bool valid = v >= 0.0f && v <= a.max_code;
      const float l = __bfloat162float(logits[k * static_cast<int64_t>(a.n) + i]);
      if (valid && l > best) {  // first maximum wins, as torch.argmax
        best = l;
        code = v;
      }
    }
    codes[i] = static_cast<uint8_t>(code);
  }
}

}  // namespace

cudaError_t GsqForwardBf16(const GsqTensorsBf16& t, const GsqStepParams& p, __nv_bfloat16* w_out,
                           const __nv_bfloat16* subtract, cudaStream_t stream) {
  if (!Supported(t)) return cudaErrorInvalidValue;
  const Args a = MakeArgs(t, p);
  if (a.groups == 0) return cudaSuccess;
  const unsigned threads = 32 * kWarpsPerBlock;
  if (t.levels == 4) {
    ForwardKernel<4><<<Blocks(a.groups), threads, 0, stream>>>(a, t.logits, nullptr, t.scales,
                                                                 t.zeros, w_out, subtract);
  } else {
    ForwardKernel<5><<<Blocks(a.groups), threads, 0, stream>>>(a, t.logits, t.base, t.scales,
                                                                 t.zeros, w_out, subtract);
  }
  return cudaGetLastError();
}

LionArgs MakeLion(const GsqStepParams& p) {
  LionArgs o;
  o.de_scale = p.kappa / p.tau;
  o.lr = p.lr_logits;
  o.decay = 1.0f - p.lr_logits * p.weight_decay;
  o.b1 = p.beta1;
  o.b2 = p.beta2;
  o.lr_scales = p.lr_scales;
  return o;
}

cudaError_t GsqBackwardLionBf16(const GsqTensorsBf16& t, const GsqStepParams& p,
                                const __nv_bfloat16* grad_w, float* grad_scales,
                                cudaStream_t stream) {
  if (!Supported(t)) return cudaErrorInvalidValue;
  const Args a = MakeArgs(t, p);
  if (a.groups == 0) return cudaSuccess;
  const unsigned threads = 32 * kWarpsPerBlock;
  const LionArgs o = MakeLion(p);
  if (t.levels == 4) {
    BackwardKernel<4><<<Blocks(a.groups), threads, 0, stream>>>(
        a, t.logits, t.momentum, nullptr, t.scales, t.zeros, grad_w, grad_scales, o);
  } else {
    BackwardKernel<5><<<Blocks(a.groups), threads, 0, stream>>>(
        a, t.logits, t.momentum, t.base, t.scales, t.zeros, grad_w, grad_scales, o);
  }
  return cudaGetLastError();
}

cudaError_t GsqStepFusedBf16(const GsqTensorsBf16& t, const GsqStepParams& p,
                             const GsqStepParams& next, const __nv_bfloat16* grad_w,
                             float* scale_momentum, __nv_bfloat16* w_out,
                             const __nv_bfloat16* subtract, cudaStream_t stream) {
  if (!Supported(t) || t.group_size > 32 * kVec * kMaxPasses) return cudaErrorInvalidValue;
  const Args a = MakeArgs(t, p), an = MakeArgs(t, next);
  if (a.groups == 0) return cudaSuccess;
  const unsigned threads = 32 * kWarpsPerBlock;
  const LionArgs o = MakeLion(p);
  if (t.levels == 4) {
    FusedKernel<4><<<Blocks(a.groups), threads, 0, stream>>>(
        a, an, t.logits, t.momentum, nullptr, t.scales, scale_momentum, t.zeros, grad_w, o, w_out,
        subtract);
  } else {
    FusedKernel<5><<<Blocks(a.groups), threads, 0, stream>>>(
        a, an, t.logits, t.momentum, t.base, t.scales, scale_momentum, t.zeros, grad_w, o, w_out,
        subtract);
  }
  return cudaGetLastError();
}

cudaError_t GsqHardCodesBf16(const GsqTensorsBf16& t, uint8_t* codes, cudaStream_t stream) {
  if (!Supported(t)) return cudaErrorInvalidValue;
  const Args a = MakeArgs(t, GsqStepParams{});
  if (a.n == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((a.n + 255) / 256, 65535));
  if (t.levels == 4) {
    HardKernel<4><<<blocks, 256, 0, stream>>>(a, t.logits, nullptr, codes);
  } else {
    HardKernel<5><<<blocks, 256, 0, stream>>>(a, t.logits, t.base, codes);
  }
  return cudaGetLastError();
}

}  // namespace quant::kernels
