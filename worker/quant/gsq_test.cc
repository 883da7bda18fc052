// GSQ: the fused step kernels against a tensor-op formulation with the same noise, op counts
// that do not grow with the number of experts, determinism, and that training lowers the
// objective while empty experts keep their GPTQ codes.
#include "worker/quant/gsq.h"

#include <ATen/record_function.h>
#include <gtest/gtest.h>

#include <atomic>

#include "kernels/gsq_step.h"
#include "worker/quant/gptq.h"

namespace quant::quant {
namespace {

// Gumbel noise tensor [K, n] from the kernels' counter-based uniforms.
at::Tensor Noise(int levels, int64_t n, uint64_t seed, uint64_t step) {
  at::Tensor g = at::empty({levels, n}, at::kFloat);
  float* p = g.data_ptr<float>();
  for (int k = 0; k < levels; ++k) {
    for (int64_t i = 0; i < n; ++i) {
      const double u = kernels::CounterUniform(seed, step, i, k);
      p[k * n + i] = static_cast<float>(-std::log(-std::log(u + 1e-8) + 1e-8));
    }
  }
  return g;
}

struct KernelCase {
  int bits;
  int64_t rows, cols, group;
};

class GsqKernelTest : public ::testing::TestWithParam<KernelCase> {};

TEST_P(GsqKernelTest, ForwardAndBackwardMatchTensorOps) {
  const KernelCase c = GetParam();
  at::manual_seed(7);
  const int levels = c.bits == 2 ? 4 : 5;
  const int max_code = (1 << c.bits) - 1;
  const int64_t n = c.rows * c.cols;
  at::Tensor logits = at::randn({levels, n}) * 0.05;
  at::Tensor momentum = at::randn({levels, n}) * 1e-3;
  at::Tensor base = at::randint(0, max_code + 1, {n}).to(at::kFloat);
  at::Tensor offsets = c.bits == 2 ? at::arange(4, at::kFloat) : at::arange(-2, 3, at::kFloat);
  at::Tensor scales = at::rand({n / c.group}) * 0.1 + 0.01;
  at::Tensor zeros = at::randint(0, max_code + 1, {n / c.group}).to(at::kFloat);
  at::Tensor scale_momentum = at::zeros_like(scales);
  at::Tensor grad_w = at::randn({n});

  kernels::GsqTensors t;
  t.rows = c.rows;
  t.cols = c.cols;
  t.group_size = c.group;
  t.levels = levels;
  t.max_code = max_code;
  at::Tensor k_logits = logits.clone(), k_momentum = momentum.clone();
  t.logits = k_logits.data_ptr<float>();
  t.momentum = k_momentum.data_ptr<float>();
  t.base = c.bits == 2 ? nullptr : base.data_ptr<float>();
  t.offsets = offsets.data_ptr<float>();
  t.scales = scales.data_ptr<float>();
  t.scale_momentum = scale_momentum.data_ptr<float>();
  t.zeros = zeros.data_ptr<float>();
  kernels::GsqStepParams p;
  p.kappa = 230;
  p.tau = 0.7f;
  p.seed = 11;
  p.step = 5;

  at::Tensor w = at::empty({n});
  kernels::GsqForward_ref(t, p, w.data_ptr<float>(), 0, c.rows);
  at::Tensor grad_scales = at::empty_like(scales);
  kernels::GsqBackwardLion_ref(t, p, grad_w.data_ptr<float>(), grad_scales.data_ptr<float>(), 0,
                               c.rows);

  // The same step in tensor ops (float64 to keep the comparison about the kernel).
  at::Tensor values = c.bits == 2 ? offsets.unsqueeze(1).expand({levels, n})
                                  : base.unsqueeze(0) + offsets.unsqueeze(1);
  at::Tensor valid = at::logical_and(values >= 0, values <= max_code);
  at::Tensor a = ((p.kappa * logits.to(at::kDouble) + Noise(levels, n, p.seed, p.step)) / p.tau)
                     .masked_fill(valid.logical_not(), -INFINITY);
  at::Tensor prob = a.softmax(0);
  at::Tensor e = (prob * values).sum(0);
  at::Tensor s_col = scales.to(at::kDouble).repeat_interleave(c.group);
  at::Tensor z_col = zeros.to(at::kDouble).repeat_interleave(c.group);
  at::Tensor w_ref = s_col * (e - z_col);
  EXPECT_LE((w.to(at::kDouble) - w_ref).abs().max().item<double>(),
            1e-5 * w_ref.abs().max().item<double>() + 1e-7);

  at::Tensor g = grad_w.to(at::kDouble);
  at::Tensor grad_l = (p.kappa / p.tau) * prob * (values - e) * (g * s_col);
  at::Tensor c_ = p.beta1 * momentum.to(at::kDouble) + (1 - p.beta1) * grad_l;
  at::Tensor l_ref = logits.to(at::kDouble) * (1 - p.lr_logits * p.weight_decay) -
                     p.lr_logits * c_.sign();
  at::Tensor m_ref = p.beta2 * momentum.to(at::kDouble) + (1 - p.beta2) * grad_l;
  // Signs of momenta within float rounding of zero may differ: allow a handful of flips.
  const double flips = ((k_logits.to(at::kDouble) - l_ref).abs() > 1e-6).sum().item<double>();
  EXPECT_LE(flips, 1e-3 * n * levels + 2);
  EXPECT_LE((k_momentum.to(at::kDouble) - m_ref).abs().max().item<double>(),
            1e-4 * m_ref.abs().max().item<double>() + 1e-9);
  // The probability cache (CPU path) gives the same update as replaying the noise.
  at::Tensor c_logits = logits.clone(), c_momentum = momentum.clone();
  at::Tensor cache = at::empty({levels, n});
  kernels::GsqTensors tc = t;
  tc.logits = c_logits.data_ptr<float>();
  tc.momentum = c_momentum.data_ptr<float>();
  tc.prob_cache = cache.data_ptr<float>();
  at::Tensor w2 = at::empty({n}), gs2 = at::empty_like(scales);
  kernels::GsqForward_ref(tc, p, w2.data_ptr<float>(), 0, c.rows);
  kernels::GsqBackwardLion_ref(tc, p, grad_w.data_ptr<float>(), gs2.data_ptr<float>(), 0, c.rows);
  EXPECT_TRUE(at::equal(w, w2));
  EXPECT_TRUE(at::allclose(k_logits, c_logits, 0, 1e-7));
  EXPECT_TRUE(at::allclose(gs2, grad_scales, 1e-5, 1e-7));
  at::Tensor gs_ref = (g * (e - z_col)).view({-1, c.group}).sum(1);
  EXPECT_LE((grad_scales.to(at::kDouble) - gs_ref).abs().max().item<double>(),
            1e-4 * gs_ref.abs().max().item<double>() + 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Shapes, GsqKernelTest,
                         ::testing::Values(KernelCase{2, 4, 128, 128}, KernelCase{3, 3, 64, 64},
                                           KernelCase{4, 1, 256, 128}, KernelCase{2, 7, 24, 8},
                                           KernelCase{8, 2, 40, 40}),
                         [](const ::testing::TestParamInfo<KernelCase>& info) {
                           const KernelCase& c = info.param;
                           return "b" + std::to_string(c.bits) + "_" + std::to_string(c.rows) +
                                  "x" + std::to_string(c.cols) + "_g" + std::to_string(c.group);
                         });

// A small synthetic MoE layer: E experts of SwiGLU with hidden h and intermediate i.
struct Layer {
  std::vector<GsqFamily> families;
  GsqExpertTokens tokens;
};

Layer MakeLayer(int experts, int64_t hidden, int64_t inter, int64_t tokens_per_expert,
                const QuantScheme& scheme, bool empty_last = false) {
  at::manual_seed(3);
  Layer l;
  const char* names[3] = {"gate_proj", "up_proj", "down_proj"};
  std::vector<at::Tensor> w[3];
  for (int e = 0; e < experts; ++e) {
    w[0].push_back(at::randn({inter, hidden}) * 0.05);
    w[1].push_back(at::randn({inter, hidden}) * 0.05);
    w[2].push_back(at::randn({hidden, inter}) * 0.05);
    const int64_t n = (empty_last && e == experts - 1) ? 0 : tokens_per_expert;
    at::Tensor x = at::randn({n, hidden});
    at::Tensor y = at::matmul(at::silu(at::matmul(x, w[0].back().t())) *
                                  at::matmul(x, w[1].back().t()),
                              w[2].back().t());
    l.tokens.inputs.push_back(x);
    l.tokens.targets.push_back(y);
  }
  l.tokens.layer_tokens = tokens_per_expert * experts / 2;  // top-2
  GptqQuantizer gptq;
  for (int f = 0; f < 3; ++f) {
    GsqFamily fam;
    fam.name = names[f];
    for (int e = 0; e < experts; ++e) {
      fam.init.push_back(*gptq.Quantize(w[f][e], scheme, UnitContext{}));
      fam.original.push_back(w[f][e]);
      fam.hessian.push_back(at::Tensor());
    }
    l.families.push_back(std::move(fam));
  }
  return l;
}

std::atomic<int64_t> g_ops{0};
thread_local int g_depth = 0;  // ops that ops call internally (bmm -> mm per batch) don't count

TEST(GsqTest, OpsPerStepDoNotGrowWithExperts) {
  QuantScheme scheme{2, Grid::kSymmetric, 32};
  auto count = [&](int experts, int steps) {
    Layer l = MakeLayer(experts, 64, 32, 64, scheme);
    GsqOptions o;
    o.steps = steps;
    o.batch_tokens = 64;
    g_ops = 0;
    auto handle = at::addThreadLocalCallback(at::RecordFunctionCallback(
        [](const at::RecordFunction&) -> std::unique_ptr<at::ObserverContext> {
          if (g_depth++ == 0) ++g_ops;
          return nullptr;
        },
        [](const at::RecordFunction&, at::ObserverContext*) { --g_depth; }));
    auto r = RunGsq(l.families, &l.tokens, scheme, o);
    at::removeCallback(handle);
    EXPECT_TRUE(r.ok()) << r.status();
    return g_ops.load();
  };
  // Top-level ops of 10 extra steps: setup and reporting costs cancel out.
  const int64_t per_step_4 = (count(4, 12) - count(4, 2)) / 10;
  const int64_t per_step_16 = (count(16, 12) - count(16, 2)) / 10;
  std::printf("ATen ops per GSQ step: %lld with 4 experts, %lld with 16\n",
              static_cast<long long>(per_step_4), static_cast<long long>(per_step_16));
  EXPECT_GT(per_step_4, 0);
  EXPECT_EQ(per_step_4, per_step_16);
}

TEST(GsqTest, SameSeedSameBytesAndTrainingLowersTheObjective) {
  for (int bits : {2, 3}) {
    QuantScheme scheme{bits, Grid::kSymmetric, 32};
    Layer l = MakeLayer(4, 64, 32, 256, scheme, /*empty_last=*/true);
    GsqOptions o;
    o.steps = 120;
    o.batch_tokens = 128;
    auto a = RunGsq(l.families, &l.tokens, scheme, o);
    auto b = RunGsq(l.families, &l.tokens, scheme, o);
    ASSERT_TRUE(a.ok() && b.ok());
    double before = 0, after = 0;
    for (size_t f = 0; f < 3; ++f) {
      for (int e = 0; e < 4; ++e) {
        EXPECT_TRUE(at::equal(a->families[f][e].codes, b->families[f][e].codes));
        EXPECT_TRUE(at::equal(a->families[f][e].scales, b->families[f][e].scales));
      }
      // The expert without tokens keeps its GPTQ codes and scales exactly.
      EXPECT_TRUE(at::equal(a->families[f][3].codes, l.families[f].init[3].codes));
      EXPECT_TRUE(at::equal(a->families[f][3].scales, l.families[f].init[3].scales));
      EXPECT_EQ(a->reports[f][3].tokens, 0);
    }
    for (int e = 0; e < 3; ++e) {
      before += a->reports[0][e].loss_before;
      after += a->reports[0][e].loss_after;
      EXPECT_GT(a->reports[0][e].changed_fraction, 0.0);
    }
    std::printf("%d-bit: expert-output MSE %.4g -> %.4g\n", bits, before, after);
    EXPECT_LT(after, before);
  }
}

TEST(GsqTest, LayerLocalObjectiveLowersTraceLoss) {
  QuantScheme scheme{3, Grid::kAsymmetric, 32};
  at::manual_seed(5);
  at::Tensor w = at::randn({48, 64}) * 0.05;
  at::Tensor x = at::randn({512, 64}) * at::linspace(0.2, 3.0, 64);
  at::Tensor h = 2.0 * at::matmul(x.t(), x) / 512;
  GptqQuantizer gptq;
  UnitContext ctx;
  ctx.hessian = h;
  GsqFamily fam;
  fam.name = "o_proj";
  fam.init.push_back(*gptq.Quantize(w, scheme, ctx));
  fam.original.push_back(w);
  fam.hessian.push_back(h);
  GsqOptions o;
  o.steps = 200;
  o.objective = GsqObjective::kLayerLocal;
  auto r = RunGsq({fam}, nullptr, scheme, o);
  ASSERT_TRUE(r.ok()) << r.status();
  std::printf("layer-local: %.4g -> %.4g\n", r->reports[0][0].loss_before,
              r->reports[0][0].loss_after);
  EXPECT_LT(r->reports[0][0].loss_after, r->reports[0][0].loss_before);
}

}  // namespace
}  // namespace quant::quant
