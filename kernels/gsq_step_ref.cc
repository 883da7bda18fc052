// Plain C++ GSQ step kernels: the references for the CUDA versions and the CPU path. Written as
// branch-free loops over contiguous elements (levels unrolled at compile time) so the compiler
// vectorises them; exp/log use polynomial approximations accurate to ~1e-7 relative, far below
// what the Gumbel noise itself perturbs.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "kernels/gsq_step.h"

namespace quant::kernels {
namespace {

constexpr int kMaxLevels = 5;
constexpr float kEps = 1e-8f;  // the reference's eps in -log(-log(u + eps) + eps)

inline uint32_t Mix32(uint32_t x) {
  // lowbias32 (Wellons): a full-avalanche 32-bit integer hash.
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

inline uint32_t StepKey(uint64_t seed, uint64_t step) {
  return Mix32(static_cast<uint32_t>(seed) ^ Mix32(static_cast<uint32_t>(seed >> 32) ^
                                                    Mix32(static_cast<uint32_t>(step) + 0x9e3779b9u)));
}

// Uniform in [0, 1) from 24 hashed bits of (key, element, level).
inline float Uniform(uint32_t key, uint32_t element_lo, uint32_t element_hi, int level) {
  const uint32_t h =
      Mix32(element_lo ^ Mix32(key ^ (element_hi * 0x632be5abu) ^ (static_cast<uint32_t>(level) *
                                                                    0x85ebca6bu)));
  return static_cast<float>(h >> 8) * (1.0f / 16777216.0f);
}

inline float FastExp(float x) {
  // 2^(x log2 e) = 2^i * 2^f, f in [0, 1): degree-6 polynomial for 2^f (rel. error < 2e-7).
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float t = x * 1.44269504088896341f;
  const float fi = std::floor(t);
  const float f = t - fi;
  float p = 1.5353362e-4f;
  p = p * f + 1.3398874e-3f;
  p = p * f + 9.6184550e-3f;
  p = p * f + 5.5503341e-2f;
  p = p * f + 2.4022650e-1f;
  p = p * f + 6.9314718e-1f;
  p = p * f + 1.0f;
  const int32_t i = static_cast<int32_t>(fi);
  const uint32_t bits = static_cast<uint32_t>(i + 127) << 23;
  return p * std::bit_cast<float>(bits);
}

inline float FastLog(float x) {
  // x = 2^e m with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(s), s = (m-1)/(m+1), |s| < 0.172.
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  int32_t e = static_cast<int32_t>((bits >> 23) & 0xff) - 127;
  float m = std::bit_cast<float>((bits & 0x7fffffu) | 0x3f800000u);
  const bool big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  e = big ? e + 1 : e;
  const float s = (m - 1.0f) / (m + 1.0f);
  const float s2 = s * s;
  float q = 1.0f / 9.0f;
  q = q * s2 + 1.0f / 7.0f;
  q = q * s2 + 1.0f / 5.0f;
  q = q * s2 + 1.0f / 3.0f;
  q = q * s2 + 1.0f;
  return static_cast<float>(e) * 0.69314718055994531f + 2.0f * s * q;
}

inline float Gumbel(float u) { return -FastLog(-FastLog(u + kEps) + kEps); }

inline float Sign(float x) { return static_cast<float>((x > 0.0f) - (x < 0.0f)); }

// Softmax over the valid levels of element i; returns E[v] and fills prob[] and value[].
template <int K>
inline float SoftExpected(const GsqTensors& t, const GsqStepParams& p, uint32_t key, int64_t i,
                          int64_t n, float* prob, float* value) {
  const float base = t.base ? t.base[i] : 0.0f;
  const uint32_t lo = static_cast<uint32_t>(i), hi = static_cast<uint32_t>(i >> 32);
  float a[K];
  float amax = -3.0e38f;
  for (int k = 0; k < K; ++k) {
    value[k] = base + t.offsets[k];
    const bool valid = value[k] >= 0.0f && value[k] <= static_cast<float>(t.max_code);
    const float g = Gumbel(Uniform(key, lo, hi, k));
    a[k] = valid ? (p.kappa * t.logits[k * n + i] + g) / p.tau : -3.0e38f;
    amax = std::max(amax, a[k]);
  }
  float sum = 0.0f;
  for (int k = 0; k < K; ++k) {
    prob[k] = a[k] > -1.0e38f ? FastExp(a[k] - amax) : 0.0f;
    sum += prob[k];
  }
  const float inv = 1.0f / sum;
  float expected = 0.0f;
  for (int k = 0; k < K; ++k) {
    prob[k] *= inv;
    expected += prob[k] * value[k];
  }
  return expected;
}

template <int K>
void ForwardRows(const GsqTensors& t, const GsqStepParams& p, float* w_out, int64_t r0,
                 int64_t r1) {
  const int64_t n = t.rows * t.cols;
  const uint32_t key = StepKey(p.seed, p.step);
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t c = 0; c < t.cols; ++c) {
      const int64_t i = r * t.cols + c;
      const int64_t g = i / t.group_size;
      float prob[K], value[K];
      const float e = SoftExpected<K>(t, p, key, i, n, prob, value);
      w_out[i] = t.scales[g] * (e - t.zeros[g]);
    }
  }
}

template <int K>
void BackwardRows(const GsqTensors& t, const GsqStepParams& p, const float* grad_w,
                  float* grad_scales, int64_t r0, int64_t r1) {
  const int64_t n = t.rows * t.cols;
  const uint32_t key = StepKey(p.seed, p.step);
  const float decay = 1.0f - p.lr_logits * p.weight_decay;
  const float coef = p.kappa / p.tau;
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t g0 = r * t.cols; g0 < (r + 1) * t.cols; g0 += t.group_size) {
      const int64_t g = g0 / t.group_size;
      float gs = 0.0f;
      for (int64_t i = g0; i < g0 + t.group_size; ++i) {
        float prob[K], value[K];
        const float e = SoftExpected<K>(t, p, key, i, n, prob, value);
        gs += grad_w[i] * (e - t.zeros[g]);
        const float de = grad_w[i] * t.scales[g] * coef;
        for (int k = 0; k < K; ++k) {
          const float grad = prob[k] * (value[k] - e) * de;
          float& logit = t.logits[k * n + i];
          float& m = t.momentum[k * n + i];
          const float update = Sign(p.beta1 * m + (1.0f - p.beta1) * grad);
          logit = logit * decay - p.lr_logits * update;
          m = p.beta2 * m + (1.0f - p.beta2) * grad;
        }
      }
      grad_scales[g] = gs;
    }
  }
}

template <int K>
void HardRows(const GsqTensors& t, uint8_t* codes, int64_t r0, int64_t r1) {
  const int64_t n = t.rows * t.cols;
  for (int64_t i = r0 * t.cols; i < r1 * t.cols; ++i) {
    const float base = t.base ? t.base[i] : 0.0f;
    float best = -3.0e38f;
    float code = 0.0f;
    for (int k = 0; k < K; ++k) {
      const float v = base + t.offsets[k];
      const bool valid = v >= 0.0f && v <= static_cast<float>(t.max_code);
      if (valid && t.logits[k * n + i] > best) {  // first maximum wins, as torch.argmax
        best = t.logits[k * n + i];
        code = v;
      }
    }
    codes[i] = static_cast<uint8_t>(code);
  }
}

}  // namespace

float CounterUniform(uint64_t seed, uint64_t step, uint64_t element, int level) {
  return Uniform(StepKey(seed, step), static_cast<uint32_t>(element),
                 static_cast<uint32_t>(element >> 32), level);
}

void GsqForward_ref(const GsqTensors& t, const GsqStepParams& p, float* w_out, int64_t row_begin,
                    int64_t row_end) {
  if (t.levels == 4) {
    ForwardRows<4>(t, p, w_out, row_begin, row_end);
  } else {
    ForwardRows<kMaxLevels>(t, p, w_out, row_begin, row_end);
  }
}

void GsqBackwardLion_ref(const GsqTensors& t, const GsqStepParams& p, const float* grad_w,
                         float* grad_scales, int64_t row_begin, int64_t row_end) {
  if (t.levels == 4) {
    BackwardRows<4>(t, p, grad_w, grad_scales, row_begin, row_end);
  } else {
    BackwardRows<kMaxLevels>(t, p, grad_w, grad_scales, row_begin, row_end);
  }
}

void GsqHardCodes_ref(const GsqTensors& t, uint8_t* codes, int64_t row_begin, int64_t row_end) {
  if (t.levels == 4) {
    HardRows<4>(t, codes, row_begin, row_end);
  } else {
    HardRows<kMaxLevels>(t, codes, row_begin, row_end);
  }
}

void LionUpdate_ref(float* param, float* momentum, const float* grad, int64_t n, float lr,
                    float weight_decay, float beta1, float beta2) {
  const float decay = 1.0f - lr * weight_decay;
  for (int64_t i = 0; i < n; ++i) {
    const float update = Sign(beta1 * momentum[i] + (1.0f - beta1) * grad[i]);
    param[i] = param[i] * decay - lr * update;
    momentum[i] = beta2 * momentum[i] + (1.0f - beta2) * grad[i];
  }
}

}  // namespace quant::kernels
