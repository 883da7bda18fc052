// The GSQ step's scalar math, shared by the C++ reference (kernels/gsq_step_ref.cc) and the CUDA
// kernels (kernels/gsq_step.cu) so both draw the same noise: a counter-based hash of (seed, step,
// element, level) -> uniform -> Gumbel, and the exp/log approximations (~1e-7 relative). Plain
// arithmetic only (ternaries for min/max, memcpy for bit casts): it vectorises on the CPU and
// compiles for the device.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define QUANT_HD __host__ __device__ __forceinline__
#else
#define QUANT_HD inline
#endif

namespace quant::kernels::gsq_math {

constexpr float kEps = 1e-8f;  // the reference's eps in -log(-log(u + eps) + eps)
constexpr float kMasked = -3.0e38f;

template <typename To, typename From>
QUANT_HD To BitCast(From from) {
  static_assert(sizeof(To) == sizeof(From));
  To to;
#if defined(__CUDA_ARCH__)
  memcpy(&to, &from, sizeof(To));
#else
  std::memcpy(&to, &from, sizeof(To));
#endif
  return to;
}

QUANT_HD uint32_t Mix32(uint32_t x) {
  // lowbias32 (Wellons): a full-avalanche 32-bit integer hash.
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

QUANT_HD uint32_t StepKey(uint64_t seed, uint64_t step) {
  return Mix32(static_cast<uint32_t>(seed) ^
               Mix32(static_cast<uint32_t>(seed >> 32) ^
                     Mix32(static_cast<uint32_t>(step) + 0x9e3779b9u)));
}

// Per-level key: the element index is then hashed once per (element, level).
QUANT_HD uint32_t LevelKey(uint32_t step_key, int level) {
  return Mix32(step_key ^ (static_cast<uint32_t>(level) * 0x85ebca6bu + 0x632be5abu));
}

// Uniform in [0, 1) from 23 hashed bits of (level key, element): the bits become the mantissa
// of a float in [1, 2) (no integer-to-float conversion, which AVX2 lacks for unsigned lanes).
QUANT_HD float Uniform(uint32_t level_key, uint32_t element) {
  const uint32_t h = Mix32(element ^ level_key);
  return BitCast<float>((h >> 9) | 0x3f800000u) - 1.0f;
}

QUANT_HD float FastExp(float x) {
  // 2^(x log2 e) = 2^i * 2^f, f in [0, 1): degree-6 polynomial for 2^f (rel. error < 2e-7).
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float t = x * 1.44269504088896341f;
  const float fi = floorf(t);
  const float f = t - fi;
  float p = 1.5353362e-4f;
  p = p * f + 1.3398874e-3f;
  p = p * f + 9.6184550e-3f;
  p = p * f + 5.5503341e-2f;
  p = p * f + 2.4022650e-1f;
  p = p * f + 6.9314718e-1f;
  p = p * f + 1.0f;
  const int32_t i = static_cast<int32_t>(fi);
  return p * BitCast<float>((i + 127) << 23);  // i in [-126, 127]: no overflow
}

QUANT_HD float FastLog(float x) {
  // x = 2^e m with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(s), s = (m-1)/(m+1), |s| < 0.172.
  // Signed integer lanes throughout: they convert to float in one AVX2 instruction.
  const int32_t bits = BitCast<int32_t>(x);
  const float e0 = static_cast<float>(bits >> 23) - 127.0f;  // x > 0: the sign bit is clear
  const float m0 = BitCast<float>((bits & 0x7fffff) | 0x3f800000);
  const bool big = m0 > 1.41421356f;
  const float m = big ? m0 * 0.5f : m0;
  const float e = e0 + (big ? 1.0f : 0.0f);
  const float s = (m - 1.0f) / (m + 1.0f);
  const float s2 = s * s;
  float q = 1.0f / 9.0f;
  q = q * s2 + 1.0f / 7.0f;
  q = q * s2 + 1.0f / 5.0f;
  q = q * s2 + 1.0f / 3.0f;
  q = q * s2 + 1.0f;
  return e * 0.69314718055994531f + 2.0f * s * q;
}

QUANT_HD float Gumbel(float u) { return -FastLog(-FastLog(u + kEps) + kEps); }

QUANT_HD float Sign(float x) { return static_cast<float>((x > 0.0f) - (x < 0.0f)); }

}  // namespace quant::kernels::gsq_math
