// The bf16-state GSQ kernels (kernels/gsq_step_bf16.h) against the exact C++ references on inputs
// that bf16 holds exactly, shapes odd ones included, outputs poisoned before each run. They are
// not bit-identical by design (bf16 state, __expf/__logf, FMA contraction), so the checks are
// the tolerances that implies:
// - soft weights: within 2 bf16 ulps of the reference's fp32 weight (one for the final rounding,
//   one for the approximations moving a value across a rounding boundary), plus 1e-5 of a grid
//   step for weights near zero;
// - logits after Lion: the bf16 value just below or just above the reference's fp32 result
//   (stochastic rounding), except where the approximations flip the sign of Lion's update,
//   which moves a logit by 2 lr: at most 0.1% of the logits, and only those;
// - momentum: within 2 bf16 ulps of the reference (plus 1e-5 of the largest, for the gradient's
//   approximation error);
// - scale gradients: 1e-4 of the largest (fp32 sums of bf16 gradients in another order);
// - hard codes: identical (argmax of the same values);
// - stochastic rounding: unbiased (the mean of 2^20 roundings of one value within 4 sigma).
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

  GsqTensorsBf16 d;
  d.rows = c.rows;
  d.cols = c.cols;
  d.group_size = c.group;
  d.levels = levels;
  d.max_code = max_code;
  d.logits = ToDevice(ToBf16(logits));
  d.momentum = ToDevice(ToBf16(momentum));
  d.base = base_u8.empty() ? nullptr : ToDevice(base_u8);
  for (int k = 0; k < levels; ++k) d.offsets[k] = offsets[k];
  d.scales = ToDevice(scales);
  d.zeros = ToDevice(zeros);
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

  int64_t w_bad = 0, l_flip = 0, l_bad = 0, m_bad = 0, g_bad = 0, code_bad = 0;
  double m_max = 0, g_max = 0;
  for (float x : m_ref) m_max = std::max(m_max, std::fabs(static_cast<double>(x)));
  for (float x : gs_ref) g_max = std::max(g_max, std::fabs(static_cast<double>(x)));
  for (int64_t i = 0; i < n; ++i) {
    // Near zero the approximations' absolute error (1e-5 of a grid step) exceeds the ulps.
    const double slack = 1e-5 * std::fabs(scales[i / c.group]) * (max_code + 1);
    if (!(std::fabs(w[i] - w_ref[i]) <= 2 * UlpBf16(w_ref[i]) + slack)) ++w_bad;  // NaN: bad
    code_bad += codes[i] != codes_ref[i];
  }
  for (int64_t i = 0; i < levels * n; ++i) {
    const double ulp = UlpBf16(l_ref[i]);
    const double diff = std::fabs(static_cast<double>(l[i]) - l_ref[i]);
    if (!(diff <= ulp)) {
      // A flipped Lion sign: the logit moved by 2 lr the other way (plus the rounding).
      if (std::fabs(diff - 2 * p.lr_logits) <= 2 * ulp) ++l_flip; else ++l_bad;
    }
    if (!(std::fabs(m[i] - m_ref[i]) <= 2 * UlpBf16(m_ref[i]) + 1e-5 * m_max)) ++m_bad;
  }
  for (int64_t i = 0; i < groups; ++i) {
    if (!(std::fabs(gs[i] - gs_ref[i]) <= 1e-4 * g_max)) ++g_bad;
  }
  const bool ok = w_bad == 0 && l_bad == 0 && l_flip <= levels * n / 1000 && m_bad == 0 &&
                  g_bad == 0 && code_bad == 0;
  std::printf("%5lld x %5lld g%-4lld %d-bit: weights off %lld, logits off %lld (sign flips %lld), "
              "momentum off %lld, scale-grads off %lld, codes off %lld  %s\n",
              static_cast<long long>(c.rows), static_cast<long long>(c.cols),
              static_cast<long long>(c.group), c.bits, static_cast<long long>(w_bad),
              static_cast<long long>(l_bad), static_cast<long long>(l_flip),
              static_cast<long long>(m_bad), static_cast<long long>(g_bad),
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
  std::printf("%s\n", ok ? "all cases within tolerance" : "MISMATCH");
  return ok ? 0 : 1;
}
