// The bf16-state GSQ kernels (kernels/gsq_step_bf16.h) against the exact C++ references on inputs
// that bf16 holds exactly, shapes odd ones included, outputs poisoned before each run. They are
// not bit-identical by design (bf16 state, __expf/__logf, FMA contraction), so the checks are
// the tolerances that implies. "Tight" is what rounding alone allows; the approximations
// (relative ~1e-6) are amplified by kappa/tau (up to 1e4) in near-tie softmaxes, so a few
// elements in 10^4 may exceed it, none by more than "loose":
// - soft weights: tight 2 bf16 ulps of the reference's fp32 weight + 1e-5 of a grid step;
//   loose 1e-3 of a grid step;
// - logits after Lion: the bf16 value just below or just above the reference's fp32 result
//   (stochastic rounding), except where the approximations flip the sign of Lion's update,
//   which moves a logit by 2 lr: at most 0.1% of the logits, and only those;
// - momentum: tight 2 bf16 ulps + 1e-5 of the largest; loose 1e-3 of the largest;
// - scale gradients: 1e-4 of the largest (fp32 sums of bf16 gradients in another order);
// - hard codes: identical (argmax of the same values);
// - stochastic rounding: unbiased (the mean of 2^20 roundings of one value within 4 sigma);
// - the fused step (backward + Lion on logits and scales + the next step's forward) against the
//   same three as separate launches: logits and momentum identical, scales identical but for
//   sign flips of their Lion step where its argument is ~0 (1% at most), scale momentum within
//   1e-5 of the largest (FMA contraction in the group sums), next soft weights within one ulp.
// Exit 0 with "skipped" where no CUDA device is present.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cuda_test_util.h"
#include "kernels/gsq_step.h"
#include "kernels/gsq_step_bf16.h"
#include "kernels/gsq_step_cuda.h"

using namespace quant::kernels;
using namespace quant::kernels::testing;

namespace {

struct Case {
  int64_t rows, cols, group;
  int bits;
};

float RoundBf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

std::vector<__nv_bfloat16> ToBf16(const std::vector<float>& v) {
  std::vector<__nv_bfloat16> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = __float2bfloat16_rn(v[i]);
  return r;
}

std::vector<float> FromBf16(const std::vector<__nv_bfloat16>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = __bfloat162float(v[i]);
  return r;
}

// One bf16 ulp at |x| (the spacing of bf16 values around x).
double UlpBf16(double x) {
  const double a = std::max(std::fabs(x), 1e-30);
  return std::ldexp(1.0, std::ilogb(a) - 7);
}

// The bf16 kernels' tensors on the device from host values (logits and momentum rounded to bf16).
GsqTensorsBf16 ToDeviceBf16(const Case& c, const std::vector<float>& logits,
                            const std::vector<float>& momentum, const std::vector<uint8_t>& base,
                            const std::vector<float>& scales, const std::vector<float>& zeros) {
  const int levels = c.bits == 2 ? 4 : 5;
  GsqTensorsBf16 d;
  d.rows = c.rows;
  d.cols = c.cols;
  d.group_size = c.group;
  d.levels = levels;
  d.max_code = (1 << c.bits) - 1;
  d.logits = ToDevice(ToBf16(logits));
  d.momentum = ToDevice(ToBf16(momentum));
  d.base = base.empty() ? nullptr : ToDevice(base);
  for (int k = 0; k < levels; ++k) d.offsets[k] = levels == 5 ? k - 2.0f : static_cast<float>(k);
  d.scales = ToDevice(scales);
  d.zeros = ToDevice(zeros);
  return d;
}

bool RunCase(const Case& c, std::mt19937& rng) {
  const int64_t n = c.rows * c.cols, groups = n / c.group;
  const int levels = c.bits == 2 ? 4 : 5;
  const int max_code = (1 << c.bits) - 1;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> code(0, max_code);
  std::vector<float> logits(levels * n), momentum(levels * n), base_f, offsets(levels);
  std::vector<uint8_t> base_u8;
  for (float& x : logits) x = RoundBf16(0.01f * normal(rng));
  for (float& x : momentum) x = RoundBf16(1e-4f * normal(rng));
  if (levels == 5) {
    base_f.resize(n);
    base_u8.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      base_u8[i] = static_cast<uint8_t>(code(rng));
      base_f[i] = base_u8[i];
    }
    for (int k = 0; k < 5; ++k) offsets[k] = static_cast<float>(k - 2);
  } else {
    for (int k = 0; k < 4; ++k) offsets[k] = static_cast<float>(k);
  }
  std::vector<float> scales(groups), zeros(groups), grad_w(n), subtract(n, 0.0f);
  for (float& s : scales) s = 0.01f * normal(rng);
  for (float& z : zeros) z = static_cast<float>(1 << (c.bits - 1));
  for (float& g : grad_w) g = RoundBf16(1e-3f * normal(rng));
  GsqStepParams p;
  p.seed = rng();
  p.step = rng() % 640;
  p.kappa = 100.0f + 400.0f * (p.step / 639.0f);
  p.tau = 2.0f - 1.95f * (p.step / 639.0f);

  std::vector<float> l_ref = logits, m_ref = momentum, w_ref(n), gs_ref(groups);
  GsqTensors t;
  t.rows = c.rows;
  t.cols = c.cols;
  t.group_size = c.group;
  t.levels = levels;
  t.max_code = max_code;
  t.logits = l_ref.data();
  t.momentum = m_ref.data();
  t.base = base_f.empty() ? nullptr : base_f.data();
  t.offsets = offsets.data();
  t.scales = scales.data();
  t.zeros = zeros.data();
  std::vector<uint8_t> codes_ref(n);
  GsqHardCodes_ref(t, codes_ref.data(), 0, c.rows);  // on the starting logits
  GsqForward_ref(t, p, w_ref.data(), 0, c.rows);
  GsqBackwardLion_ref(t, p, grad_w.data(), gs_ref.data(), 0, c.rows);

  GsqTensorsBf16 d = ToDeviceBf16(c, logits, momentum, base_u8, scales, zeros);
  __nv_bfloat16* w_gpu = ToDevice(ToBf16(std::vector<float>(n, NAN)));
  float* gs_gpu = ToDevice(std::vector<float>(groups, NAN));
  __nv_bfloat16* gw = ToDevice(ToBf16(grad_w));
  uint8_t* codes_gpu = ToDevice(std::vector<uint8_t>(n, 0xff));
  CHECK_CUDA(GsqHardCodesBf16(d, codes_gpu, nullptr));
  CHECK_CUDA(GsqForwardBf16(d, p, w_gpu, nullptr, nullptr));
  CHECK_CUDA(GsqBackwardLionBf16(d, p, gw, gs_gpu, nullptr));
  CHECK_CUDA(cudaDeviceSynchronize());

  const std::vector<float> w = FromBf16(ToHost(w_gpu, n));
  const std::vector<float> l = FromBf16(ToHost(d.logits, levels * n));
  const std::vector<float> m = FromBf16(ToHost(d.momentum, levels * n));
  const std::vector<float> gs = ToHost(gs_gpu, groups);
  const std::vector<uint8_t> codes = ToHost(codes_gpu, n);

  int64_t w_bad = 0, w_far = 0, l_flip = 0, l_bad = 0, m_bad = 0, m_far = 0, g_bad = 0;
  int64_t code_bad = 0;
  double m_max = 0, g_max = 0;
  for (float x : m_ref) m_max = std::max(m_max, std::fabs(static_cast<double>(x)));
  for (float x : gs_ref) g_max = std::max(g_max, std::fabs(static_cast<double>(x)));
  for (int64_t i = 0; i < n; ++i) {
    // Near zero the approximations' absolute error (1e-5 of a grid step) exceeds the ulps.
    const double step = std::fabs(scales[i / c.group]);  // one grid step
    const double diff = std::fabs(static_cast<double>(w[i]) - w_ref[i]);
    if (!(diff <= 2 * UlpBf16(w_ref[i]) + 1e-5 * step)) ++w_bad;  // NaN counts as bad
    if (!(diff <= 2 * UlpBf16(w_ref[i]) + 1e-3 * step)) ++w_far;
    code_bad += codes[i] != codes_ref[i];
  }
  for (int64_t i = 0; i < levels * n; ++i) {
    const double ulp = UlpBf16(l_ref[i]);
    const double diff = std::fabs(static_cast<double>(l[i]) - l_ref[i]);
    if (!(diff <= ulp)) {
      // A flipped Lion sign: the logit moved by 2 lr the other way (plus the rounding).
      if (std::fabs(diff - 2 * p.lr_logits) <= 2 * ulp) ++l_flip; else ++l_bad;
    }
    const double m_diff = std::fabs(static_cast<double>(m[i]) - m_ref[i]);
    if (!(m_diff <= 2 * UlpBf16(m_ref[i]) + 1e-5 * m_max)) ++m_bad;
    if (!(m_diff <= 2 * UlpBf16(m_ref[i]) + 1e-3 * m_max)) ++m_far;
  }
  for (int64_t i = 0; i < groups; ++i) {
    if (!(std::fabs(gs[i] - gs_ref[i]) <= 1e-4 * g_max)) ++g_bad;
  }
  const bool ok = w_far == 0 && w_bad <= n / 10000 + 1 && l_bad == 0 &&
                  l_flip <= levels * n / 1000 && m_far == 0 && m_bad <= levels * n / 10000 + 1 &&
                  g_bad == 0 && code_bad == 0;
  std::printf("%5lld x %5lld g%-4lld %d-bit: weights off %lld (far %lld), logits off %lld (sign flips "
              "%lld), momentum off %lld (far %lld), scale-grads off %lld, codes off %lld  %s\n",
              static_cast<long long>(c.rows), static_cast<long long>(c.cols),
              static_cast<long long>(c.group), c.bits, static_cast<long long>(w_bad),
              static_cast<long long>(w_far), static_cast<long long>(l_bad),
              static_cast<long long>(l_flip), static_cast<long long>(m_bad),
              static_cast<long long>(m_far), static_cast<long long>(g_bad),
              static_cast<long long>(code_bad), ok ? "ok" : "FAIL");
  for (void* ptr : {static_cast<void*>(d.logits), static_cast<void*>(d.momentum),
                    const_cast<void*>(static_cast<const void*>(d.base)),
                    const_cast<void*>(static_cast<const void*>(d.scales)),
                    const_cast<void*>(static_cast<const void*>(d.zeros)),
                    static_cast<void*>(w_gpu), static_cast<void*>(gs_gpu), static_cast<void*>(gw),
                    static_cast<void*>(codes_gpu)}) {
    if (ptr) CHECK_CUDA(cudaFree(ptr));
  }
  return ok;
}

// The fused step against backward, scale Lion and the next forward as separate launches.
bool FusedMatchesSeparate(const Case& c, std::mt19937& rng) {
  const int64_t n = c.rows * c.cols, groups = n / c.group;
  const int levels = c.bits == 2 ? 4 : 5;
  const int max_code = (1 << c.bits) - 1;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> logits(levels * n), momentum(levels * n), grad(n), sub(n);
  std::vector<float> scales(groups), scale_m(groups), zeros(groups, float(1 << (c.bits - 1)));
  std::vector<uint8_t> base;
  for (float& x : logits) x = 0.01f * normal(rng);
  for (float& x : momentum) x = 1e-4f * normal(rng);
  for (float& x : grad) x = 1e-3f * normal(rng);
  for (float& x : sub) x = 0.01f * normal(rng);
  for (float& x : scales) x = 0.01f * normal(rng);
  for (float& x : scale_m) x = 1e-4f * normal(rng);
  if (levels == 5) {
    base.resize(n);
    for (uint8_t& b : base) b = static_cast<uint8_t>(rng() % (max_code + 1));
  }
  GsqStepParams p, next;
  p.seed = next.seed = rng();
  p.step = rng() % 600;
  next.step = p.step + 1;
  p.kappa = 150.0f;
  next.kappa = 151.0f;
  p.tau = 1.5f;
  next.tau = 1.49f;
  auto make = [&](float** scales_d, float** scale_m_d) {
    GsqTensorsBf16 d = ToDeviceBf16(c, logits, momentum, base, scales, zeros);
    *scales_d = d.scales;
    *scale_m_d = ToDevice(scale_m);
    return d;
  };

  float *s1, *m1, *s2, *m2;
  GsqTensorsBf16 a = make(&s1, &m1), b = make(&s2, &m2);
  __nv_bfloat16* gw = ToDevice(ToBf16(grad));
  __nv_bfloat16* sd = ToDevice(ToBf16(sub));
  __nv_bfloat16* w1 = ToDevice(ToBf16(std::vector<float>(n, NAN)));
  __nv_bfloat16* w2 = ToDevice(ToBf16(std::vector<float>(n, NAN)));
  float* gs = ToDevice(std::vector<float>(groups, NAN));
  CHECK_CUDA(GsqBackwardLionBf16(a, p, gw, gs, nullptr));
  CHECK_CUDA(LionUpdateCuda(s1, m1, gs, groups, p.lr_scales, 0.0f, p.beta1, p.beta2, nullptr));
  CHECK_CUDA(GsqForwardBf16(a, next, w1, sd, nullptr));
  CHECK_CUDA(GsqStepFusedBf16(b, p, next, gw, m2, w2, sd, nullptr));
  CHECK_CUDA(cudaDeviceSynchronize());
  const auto la = ToHost(a.logits, levels * n), lb = ToHost(b.logits, levels * n);
  const auto ma = ToHost(a.momentum, levels * n), mb = ToHost(b.momentum, levels * n);
  int64_t state_bad = 0, scale_bad = 0, scale_flip = 0, w_bad = 0;
  for (int64_t i = 0; i < levels * n; ++i) {
    state_bad += std::memcmp(&la[i], &lb[i], 2) != 0 || std::memcmp(&ma[i], &mb[i], 2) != 0;
  }
  const auto sa = ToHost(s1, groups), sb = ToHost(s2, groups);
  const auto ta = ToHost(m1, groups), tb = ToHost(m2, groups);
  double t_max = 0;
  for (float x : ta) t_max = std::max(t_max, std::fabs(static_cast<double>(x)));
  for (int64_t i = 0; i < groups; ++i) {
    // The group sum's rounding depends on FMA contraction, so the momentum agrees to ~1e-6 of
    // its terms, and a scale step can flip where Lion's argument is ~0 (allowed: 1%).
    if (sa[i] != sb[i]) {
      if (std::fabs(std::fabs(sa[i] - sb[i]) - 2 * p.lr_scales) <= 1e-6) ++scale_flip;
      else ++scale_bad;
    }
    scale_bad += !(std::fabs(ta[i] - tb[i]) <= 1e-5 * t_max);
  }
  const auto wa = FromBf16(ToHost(w1, n)), wb = FromBf16(ToHost(w2, n));
  for (int64_t i = 0; i < n; ++i) w_bad += !(std::fabs(wa[i] - wb[i]) <= UlpBf16(wa[i]));
  const bool ok = state_bad == 0 && scale_bad == 0 && scale_flip <= groups / 100 && w_bad == 0;
  std::printf("fused %5lld x %5lld g%-4lld %d-bit: state off %lld, scales off %lld (flips %lld), "
              "next weights off %lld  %s\n",
              static_cast<long long>(c.rows), static_cast<long long>(c.cols),
              static_cast<long long>(c.group), c.bits, static_cast<long long>(state_bad),
              static_cast<long long>(scale_bad), static_cast<long long>(scale_flip),
              static_cast<long long>(w_bad), ok ? "ok" : "FAIL");
  for (void* ptr : {static_cast<void*>(a.logits), static_cast<void*>(a.momentum),
                    const_cast<void*>(static_cast<const void*>(a.base)),
                    const_cast<void*>(static_cast<const void*>(a.zeros)),
                    static_cast<void*>(b.logits), static_cast<void*>(b.momentum),
                    const_cast<void*>(static_cast<const void*>(b.base)),
                    const_cast<void*>(static_cast<const void*>(b.zeros)), static_cast<void*>(s1),
                    static_cast<void*>(m1), static_cast<void*>(s2), static_cast<void*>(m2),
                    static_cast<void*>(gw), static_cast<void*>(sd), static_cast<void*>(w1),
                    static_cast<void*>(w2), static_cast<void*>(gs)}) {
    if (ptr) CHECK_CUDA(cudaFree(ptr));
  }
  return ok;
}

// The mean of many stochastic roundings of x is x (within 4 standard errors).
bool StochasticRoundingUnbiased() {
  bool ok = true;
  for (float x : {0.0123456f, -0.0098765f, 1.2345678f, 3.3e-5f}) {
    const int n = 1 << 20;
    double sum = 0;
    for (int i = 0; i < n; ++i) {
      const uint16_t bits = StochasticRoundBf16Bits(x, 0x1234567u, static_cast<uint32_t>(i));
      uint32_t f = static_cast<uint32_t>(bits) << 16;
      float y;
      std::memcpy(&y, &f, 4);
      sum += y;
    }
    const double mean = sum / n, se = UlpBf16(x) / 2 / std::sqrt(static_cast<double>(n));
    const bool good = std::fabs(mean - x) <= 4 * se;
    std::printf("stochastic rounding of %.7g: mean %.9g (se %.2g) %s\n", x, mean, se,
                good ? "ok" : "FAIL");
    ok = ok && good;
  }
  return ok;
}

}  // namespace

int main() {
  int devices = 0;
  bool ok = StochasticRoundingUnbiased();
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("gsq_step_bf16_test: no CUDA device: kernels skipped\n");
    return ok ? 0 : 1;
  }
  std::mt19937 rng(4242);
  const Case cases[] = {{1, 128, 128, 2},  {3, 256, 128, 3},  {65, 256, 128, 2},
                        {130, 64, 64, 3},  {257, 384, 128, 4}, {33, 7168, 128, 3},
                        {2048, 256, 128, 2}, {7, 96, 32, 3}};
  for (const Case& c : cases) {
    for (int rep = 0; rep < 2; ++rep) ok = RunCase(c, rng) && ok;
  }
  const Case fused_cases[] = {{3, 256, 128, 3}, {65, 512, 256, 2}, {33, 7168, 128, 3},
                              {130, 64, 64, 2}, {7, 96, 32, 3}};
  for (const Case& c : fused_cases) ok = FusedMatchesSeparate(c, rng) && ok;
  std::printf("%s\n", ok ? "all cases within tolerance" : "MISMATCH");
  return ok ? 0 : 1;
}
