// Plain C++ GSQ step kernels: the references for the CUDA versions and the CPU path. Written as
// branch-free loops over contiguous elements (levels unrolled at compile time) so the compiler
// vectorises them; the scalar math (noise hash, exp/log approximations accurate to ~1e-7
// relative, far below what the Gumbel noise itself perturbs) is kernels/gsq_math.h, shared with
// the CUDA kernels.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "kernels/gsq_math.h"
#include "kernels/gsq_step.h"

// Element indices are hashed as 32-bit counters: one family of one layer share must stay below
// 2^32 elements (Kimi-K2's 48-expert share of one projection is 0.7e9).
#define QUANT_CHECK_ELEMENTS(t)                                              \
  do {                                                                       \
    if ((t).rows * (t).cols >= (int64_t{1} << 32) || (t).levels > 5 ||       \
        ((t).levels == 5) != ((t).base != nullptr)) {                        \
      std::fprintf(stderr, "GSQ kernel: unsupported tensor layout\n");     \
      std::abort();                                                          \
    }                                                                        \
  } while (0)

namespace quant::kernels {
namespace {

constexpr int kMaxLevels = 5;
using gsq_math::Gumbel;
using gsq_math::kMasked;
using gsq_math::LevelKey;
using gsq_math::Sign;
using gsq_math::StepKey;
using gsq_math::Uniform;
using gsq_math::FastExp;

// Everything a row range needs, hoisted out of the element loops (restrict: no aliasing).
template <int K>
struct Hoisted {
  int64_t n;
  float off[K];
  uint32_t key[K];
  float* __restrict logits[K];
  float* __restrict momentum[K];
  float kappa_over_tau, inv_tau, max_code;
  uint32_t element_offset;
  Hoisted(const GsqTensors& t, const GsqStepParams& p) {
    n = t.rows * t.cols;
    element_offset = static_cast<uint32_t>(p.element_offset);
    const uint32_t step_key = StepKey(p.seed, p.step);
    for (int k = 0; k < K; ++k) {
      off[k] = t.offsets[k];
      key[k] = LevelKey(step_key, k);
      logits[k] = t.logits + k * n;
      momentum[k] = t.momentum + k * n;
    }
    kappa_over_tau = p.kappa / p.tau;
    inv_tau = 1.0f / p.tau;
    max_code = static_cast<float>(t.max_code);
  }
};

constexpr int64_t kBlock = 64;  // elements per inner block: K x 64 floats stay in L1

// Softmax over the valid levels of elements [i0, i0 + m) (m <= kBlock), level-major so every
// inner loop is a plain vectorisable loop: prob[k][j], value[k][j], expected[j].
template <int K, bool kShift>
[[gnu::always_inline]] inline void SoftBlock(const Hoisted<K>& h, const float* __restrict base,
                                             int64_t i0, int64_t m, float (&prob)[K][kBlock],
                                             float (&value)[K][kBlock],
                                             float (&expected)[kBlock]) {
  float amax[kBlock];
  for (int64_t j = 0; j < m; ++j) amax[j] = kMasked;
  for (int k = 0; k < K; ++k) {
    const float* __restrict lg = h.logits[k] + i0;
    const uint32_t key = h.key[k];
    const float off = h.off[k];
    // The noise in a loop of its own over a full block (a pure function of the element index,
    // so the tail past m is harmless): GCC vectorises this one, but not the hash fused into
    // the select loop below (33 -> 5 ns per logit).
    float noise[kBlock];
    const uint32_t e0 = static_cast<uint32_t>(i0) + h.element_offset;
    for (int j = 0; j < kBlock; ++j) {
      noise[j] = Gumbel(Uniform(key, e0 + static_cast<uint32_t>(j)));
    }
    for (int64_t j = 0; j < m; ++j) {
      const float v = (kShift ? base[i0 + j] : 0.0f) + off;
      value[k][j] = v;
      // `&` and an unconditional load keep the loop free of branches (it must vectorise).
      const bool valid = (v >= 0.0f) & (v <= h.max_code);
      const float g = noise[j];
      const float l = lg[j];
      const float a = valid ? l * h.kappa_over_tau + g * h.inv_tau : kMasked;
      prob[k][j] = a;
      amax[j] = std::max(amax[j], a);
    }
  }
  float sum[kBlock];
  for (int64_t j = 0; j < m; ++j) sum[j] = 0.0f;
  for (int k = 0; k < K; ++k) {
    for (int64_t j = 0; j < m; ++j) {
      const float a = prob[k][j];
      const float ex = FastExp(a - amax[j]);
      const float pk = a > 0.5f * kMasked ? ex : 0.0f;
      prob[k][j] = pk;
      sum[j] += pk;
    }
  }
  for (int64_t j = 0; j < m; ++j) {
    sum[j] = 1.0f / sum[j];
    expected[j] = 0.0f;
  }
  for (int k = 0; k < K; ++k) {
    for (int64_t j = 0; j < m; ++j) {
      prob[k][j] *= sum[j];
      expected[j] += prob[k][j] * value[k][j];
    }
  }
}

// The forward's probabilities back from the cache, with the level values and E[v].
template <int K, bool kShift>
[[gnu::always_inline]] inline void CachedBlock(const Hoisted<K>& h, const float* __restrict base,
                                               const float* __restrict cache, int64_t i0,
                                               int64_t m, float (&prob)[K][kBlock],
                                               float (&value)[K][kBlock],
                                               float (&expected)[kBlock]) {
  for (int64_t j = 0; j < m; ++j) expected[j] = 0.0f;
  for (int k = 0; k < K; ++k) {
    const float* __restrict c = cache + k * h.n + i0;
    for (int64_t j = 0; j < m; ++j) {
      value[k][j] = (kShift ? base[i0 + j] : 0.0f) + h.off[k];
      prob[k][j] = c[j];
      expected[j] += c[j] * value[k][j];
    }
  }
}

template <int K, bool kShift>
[[gnu::always_inline]] inline void ForwardRows(const GsqTensors& t, const GsqStepParams& p,
                                               float* __restrict w_out, int64_t r0, int64_t r1) {
  const Hoisted<K> h(t, p);
  const int64_t gs = t.group_size;
  float prob[K][kBlock], value[K][kBlock], expected[kBlock];
  for (int64_t g = r0 * t.cols / gs; g < r1 * t.cols / gs; ++g) {
    const float scale = t.scales[g], zero = t.zeros[g];
    for (int64_t i0 = g * gs; i0 < (g + 1) * gs; i0 += kBlock) {
      const int64_t m = std::min(kBlock, (g + 1) * gs - i0);
      SoftBlock<K, kShift>(h, t.base, i0, m, prob, value, expected);
      for (int64_t j = 0; j < m; ++j) w_out[i0 + j] = scale * (expected[j] - zero);
      if (t.prob_cache != nullptr) {
        for (int k = 0; k < K; ++k) {
          float* __restrict cache = t.prob_cache + k * h.n + i0;
          for (int64_t j = 0; j < m; ++j) cache[j] = prob[k][j];
        }
      }
    }
  }
}

template <int K, bool kShift>
[[gnu::always_inline]] inline void BackwardRows(const GsqTensors& t, const GsqStepParams& p,
                                                const float* __restrict grad_w,
                                                float* __restrict grad_scales, int64_t r0,
                                                int64_t r1) {
  const Hoisted<K> h(t, p);
  const int64_t gs = t.group_size;
  const float decay = 1.0f - p.lr_logits * p.weight_decay;
  const float lr = p.lr_logits, b1 = p.beta1, b2 = p.beta2;
  float prob[K][kBlock], value[K][kBlock], expected[kBlock], de[kBlock];
  for (int64_t g = r0 * t.cols / gs; g < r1 * t.cols / gs; ++g) {
    const float scale = t.scales[g], zero = t.zeros[g];
    const float de_coef = scale * p.kappa / p.tau;
    float gsum = 0.0f;
    for (int64_t i0 = g * gs; i0 < (g + 1) * gs; i0 += kBlock) {
      const int64_t m = std::min(kBlock, (g + 1) * gs - i0);
      if (t.prob_cache != nullptr) {
        CachedBlock<K, kShift>(h, t.base, t.prob_cache, i0, m, prob, value, expected);
      } else {
        SoftBlock<K, kShift>(h, t.base, i0, m, prob, value, expected);
      }
      const float* __restrict gw = grad_w + i0;
      for (int64_t j = 0; j < m; ++j) {
        gsum += gw[j] * (expected[j] - zero);
        de[j] = gw[j] * de_coef;
      }
      for (int k = 0; k < K; ++k) {
        float* __restrict lg = h.logits[k] + i0;
        float* __restrict mo = h.momentum[k] + i0;
        for (int64_t j = 0; j < m; ++j) {
          const float grad = prob[k][j] * (value[k][j] - expected[j]) * de[j];
          const float mj = mo[j];
          const float update = Sign(b1 * mj + (1.0f - b1) * grad);
          lg[j] = lg[j] * decay - lr * update;
          mo[j] = b2 * mj + (1.0f - b2) * grad;
        }
      }
    }
    grad_scales[g] = gsum;
  }
}

template <int K>
void HardRows(const GsqTensors& t, uint8_t* codes, int64_t r0, int64_t r1) {
  const int64_t n = t.rows * t.cols;
  for (int64_t i = r0 * t.cols; i < r1 * t.cols; ++i) {
    const float base = t.base ? t.base[i] : 0.0f;
    float best = kMasked;
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

// Vectorised clones: AVX2 where the CPU has it (chosen at load time), plain x86-64 otherwise.
#if defined(__x86_64__) && !defined(__clang__)
#define QUANT_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define QUANT_CLONES
#endif

QUANT_CLONES void Forward4(const GsqTensors& t, const GsqStepParams& p, float* w, int64_t r0,
                           int64_t r1) {
  ForwardRows<4, false>(t, p, w, r0, r1);
}
QUANT_CLONES void Forward5(const GsqTensors& t, const GsqStepParams& p, float* w, int64_t r0,
                           int64_t r1) {
  ForwardRows<kMaxLevels, true>(t, p, w, r0, r1);
}
QUANT_CLONES void Backward4(const GsqTensors& t, const GsqStepParams& p, const float* gw,
                            float* gs, int64_t r0, int64_t r1) {
  BackwardRows<4, false>(t, p, gw, gs, r0, r1);
}
QUANT_CLONES void Backward5(const GsqTensors& t, const GsqStepParams& p, const float* gw,
                            float* gs, int64_t r0, int64_t r1) {
  BackwardRows<kMaxLevels, true>(t, p, gw, gs, r0, r1);
}

}  // namespace

float CounterUniform(uint64_t seed, uint64_t step, uint64_t element, int level) {
  return Uniform(LevelKey(StepKey(seed, step), level), static_cast<uint32_t>(element));
}

void GsqForward_ref(const GsqTensors& t, const GsqStepParams& p, float* w_out, int64_t row_begin,
                    int64_t row_end) {
  QUANT_CHECK_ELEMENTS(t);
  if (t.levels == 4 && t.base == nullptr) {
    Forward4(t, p, w_out, row_begin, row_end);
  } else {
    Forward5(t, p, w_out, row_begin, row_end);
  }
}

void GsqBackwardLion_ref(const GsqTensors& t, const GsqStepParams& p, const float* grad_w,
                         float* grad_scales, int64_t row_begin, int64_t row_end) {
  QUANT_CHECK_ELEMENTS(t);
  if (t.levels == 4 && t.base == nullptr) {
    Backward4(t, p, grad_w, grad_scales, row_begin, row_end);
  } else {
    Backward5(t, p, grad_w, grad_scales, row_begin, row_end);
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
