// GPTQ: with H = I it is RTN (no error feedback); on correlated inputs it beats RTN on the
// layer objective tr(dW H dW^T); MSE scale search never loses to min/max on its own error;
// act-order and per-channel fallback work; dead columns are zeroed.
#include "worker/quant/gptq.h"

#include <gtest/gtest.h>

namespace quant::quant {
namespace {

double Objective(const at::Tensor& w, const QuantizedWeight& q, const at::Tensor& h) {
  at::Tensor dw = q.Dequantize() - w;
  return (at::matmul(dw, h) * dw).sum().item<double>();
}

at::Tensor CorrelatedHessian(int64_t in, int64_t tokens) {
  at::Tensor mix = at::randn({in, in}) * 0.3 + at::eye(in);
  at::Tensor x = at::matmul(at::randn({tokens, in}), mix) * at::linspace(0.1, 2.0, in);
  return 2.0 * at::matmul(x.t(), x) / tokens;
}

TEST(GptqTest, IdentityHessianWithoutSearchIsRtn) {
  at::manual_seed(1);
  for (int bits : {2, 3, 4, 8}) {
    for (Grid grid : {Grid::kSymmetric, Grid::kAsymmetric}) {
      at::Tensor w = at::randn({17, 256}) * 0.1;
      QuantScheme scheme{bits, grid, 128};
      GptqOptions o;
      o.mse_scale_search = false;
      auto g = GptqQuantizer(o).Quantize(w, scheme, UnitContext{});
      auto r = RtnQuantizer().Quantize(w, scheme, UnitContext{});
      ASSERT_TRUE(g.ok() && r.ok());
      EXPECT_TRUE(at::equal(g->codes, r->codes)) << bits;
      EXPECT_TRUE(at::equal(g->scales, r->scales)) << bits;
      EXPECT_TRUE(at::equal(g->zeros, r->zeros)) << bits;
    }
  }
}

TEST(GptqTest, BeatsRtnOnCorrelatedInputs) {
  at::manual_seed(2);
  const int64_t in = 256;
  at::Tensor h = CorrelatedHessian(in, 2048);
  at::Tensor w = at::randn({64, in}) * 0.05;
  for (int bits : {2, 3, 4}) {
    QuantScheme scheme{bits, Grid::kSymmetric, 128};
    UnitContext ctx;
    ctx.hessian = h;
    GptqOptions no_mse;
    no_mse.mse_scale_search = false;
    const double rtn = Objective(w, *RtnQuantizer().Quantize(w, scheme, ctx), h);
    const double gptq = Objective(w, *GptqQuantizer(no_mse).Quantize(w, scheme, ctx), h);
    const double gptq_mse = Objective(w, *GptqQuantizer().Quantize(w, scheme, ctx), h);
    GptqOptions act;
    act.act_order = true;
    const double gptq_act = Objective(w, *GptqQuantizer(act).Quantize(w, scheme, ctx), h);
    std::printf("%d-bit tr(dW H dW^T): rtn %.4g gptq %.4g gptq+mse %.4g gptq+mse+act %.4g\n",
                bits, rtn, gptq, gptq_mse, gptq_act);
    EXPECT_LT(gptq, rtn);
    EXPECT_LT(gptq_mse, rtn);
    EXPECT_LT(gptq_act, rtn);
  }
}

TEST(GptqTest, MseSearchNeverWorseOnItsOwnError) {
  at::manual_seed(3);
  at::Tensor w = at::randn({32, 128}) * 0.05;
  w.index_put_({0, 0}, 1.0);  // an outlier: shrinking the range pays off
  for (int bits : {2, 3, 4}) {
    QuantScheme scheme{bits, Grid::kAsymmetric, 128};
    at::Tensor s0, z0, s1, z1;
    ComputeGroupParams(w, scheme, &s0, &z0);
    ComputeGroupParamsMse(w, scheme, GptqOptions{}, &s1, &z1);
    auto err = [&](const at::Tensor& s, const at::Tensor& z) {
      at::Tensor q = QuantizeToCodes(w, s, z, bits).to(at::kFloat);
      return ((s.unsqueeze(1) * (q - z.to(at::kFloat).unsqueeze(1)) - w).abs().pow(2.4))
          .sum(1);
    };
    EXPECT_TRUE((err(s1, z1) <= err(s0, z0) + 1e-9).all().item<bool>()) << bits;
  }
}

TEST(GptqTest, PerChannelFallbackAndDeadColumns) {
  at::manual_seed(4);
  at::Tensor w = at::randn({8, 64}) * 0.1;
  at::Tensor h = CorrelatedHessian(64, 256);
  h.index_put_({5, at::indexing::Slice()}, 0.0);
  h.index_put_({at::indexing::Slice(), 5}, 0.0);
  UnitContext ctx;
  ctx.hessian = h;
  auto q = GptqQuantizer().Quantize(w, QuantScheme{3, Grid::kSymmetric, 128}, ctx);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->group_size, 64);
  EXPECT_EQ(q->scales.size(1), 1);
  at::Tensor deq = q->Dequantize();
  EXPECT_TRUE((deq.select(1, 5) == 0).all().item<bool>());
}

TEST(GptqTest, RejectsBadHessianShape) {
  UnitContext ctx;
  ctx.hessian = at::eye(10);
  auto q = GptqQuantizer().Quantize(at::randn({4, 16}), QuantScheme{4, Grid::kSymmetric, 16}, ctx);
  EXPECT_FALSE(q.ok());
}

}  // namespace
}  // namespace quant::quant

namespace quant::quant {
namespace {

TEST(GptqTest, BatchEqualsOneByOne) {
  at::manual_seed(9);
  std::vector<at::Tensor> ws, hs;
  for (int m = 0; m < 5; ++m) {
    ws.push_back(at::randn({16, 256}) * 0.05);
    hs.push_back(m == 3 ? at::Tensor() : CorrelatedHessian(256, 512));
  }
  for (int bits : {2, 4}) {
    QuantScheme scheme{bits, Grid::kAsymmetric, 128};
    GptqQuantizer gptq;
    auto batch = gptq.QuantizeBatch(ws, hs, scheme);
    ASSERT_TRUE(batch.ok()) << batch.status();
    for (int m = 0; m < 5; ++m) {
      UnitContext ctx;
      ctx.hessian = hs[m];
      auto one = gptq.Quantize(ws[m], scheme, ctx);
      ASSERT_TRUE(one.ok());
      // Batched BLAS may sum in another order: allow a handful of codes off by one step.
      const double differ = one->codes.ne((*batch)[m].codes).sum().item<double>();
      EXPECT_LE(differ, 0.005 * one->codes.numel()) << m;
      EXPECT_TRUE(at::allclose(one->scales, (*batch)[m].scales)) << m;
    }
  }
}

}  // namespace
}  // namespace quant::quant

namespace quant::quant {
namespace {

// The blocked reversed Cholesky (the GPU's default factorization) against the plain route,
// J chol(J A J) J, on odd sizes: n = 1, n below, at and above one block, n not a multiple of the
// block or the leaf, and the diagonal blocks' own recursion (block / 4 above the leaf).
TEST(GptqTest, ReversedCholeskyBlockedMatchesPlain) {
  at::manual_seed(10);
  struct Case {
    int64_t n, block, leaf;
  };
  for (const Case& c : {Case{1, 4, 2}, Case{7, 16, 4}, Case{64, 16, 4}, Case{200, 48, 16},
                        Case{301, 128, 8}, Case{130, 512, 128}}) {
    const int64_t d = 3;
    std::vector<at::Tensor> hs;
    for (int64_t m = 0; m < d; ++m) {
      at::Tensor h = CorrelatedHessian(c.n, 2 * c.n + 8);
      h.diagonal().add_(0.01 * h.diagonal().mean());
      hs.push_back(h);
    }
    at::Tensor a = at::stack(hs, 0).contiguous();
    at::Tensor ref = at::linalg_cholesky(a.flip({1, 2})).flip({1, 2});
    at::Tensor r = a.clone();
    r.tril_(-1).mul_(1e30);  // the strict lower triangle is never read: poison it
    r.add_(a.triu());
    at::Tensor info = ReversedCholeskyBlocked(r, c.block, c.leaf);
    EXPECT_EQ(info.abs().sum().item<int64_t>(), 0) << c.n;
    EXPECT_TRUE(at::equal(r.tril(-1), at::zeros_like(r))) << c.n;
    const double rel = ((r - ref).norm() / ref.norm()).item<double>();
    const double fit = ((at::bmm(r, r.transpose(1, 2)) - a).norm() / a.norm()).item<double>();
    EXPECT_LT(rel, 1e-4) << c.n << " " << c.block;
    EXPECT_LT(fit, 1e-5) << c.n << " " << c.block;
  }
  // Not positive definite: reported, not hidden.
  at::Tensor bad = at::eye(40).unsqueeze(0).repeat({2, 1, 1});
  bad[1][3][3] = -1.0;
  EXPECT_GT(ReversedCholeskyBlocked(bad, 16, 4)[1].item<int>(), 0);
  EXPECT_EQ(ReversedCholeskyBlocked(at::eye(40).unsqueeze(0).contiguous(), 16, 4)[0].item<int>(),
            0);
}

}  // namespace
}  // namespace quant::quant
