// ScoreWindow against hand-computed two-token cases, identities (same logits, permuted
// vocabulary) and its own edge cases.
#include "worker/eval/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace quant::eval {
namespace {

constexpr double kTol = 1e-6;  // float32 softmax on O(1) logits: ~1e-7 relative error

at::Tensor Logits(std::vector<float> values, int64_t rows, int64_t vocab) {
  return at::tensor(values).view({rows, vocab});
}

// p from logits (log 3, 0): (0.75, 0.25). q from logits (0, 1): (1/(1+e), e/(1+e)).
// Target token 0: nll = log(1 + e); argmax q = 1 so not correct, argmax p = 0 so a flip.
TEST(ScoreWindowTest, TwoTokenHandComputed) {
  const double e = std::exp(1.0);
  const double q0 = 1.0 / (1.0 + e);
  const double q1 = e / (1.0 + e);
  const double p0 = 0.75;
  const double p1 = 0.25;
  const at::Tensor lp = Logits({static_cast<float>(std::log(3.0)), 0.0f}, 1, 2);
  const at::Tensor lq = Logits({0.0f, 1.0f}, 1, 2);
  const WindowStats s = ScoreWindow(lq, lp, at::tensor({int64_t{0}}));
  EXPECT_EQ(s.positions, 1);
  EXPECT_TRUE(s.has_reference);
  EXPECT_NEAR(s.nll_sum, std::log(1.0 + e), kTol);
  EXPECT_EQ(s.correct, 0);
  EXPECT_NEAR(s.kl_sum, p0 * std::log(p0 / q0) + p1 * std::log(p1 / q1), kTol);
  EXPECT_NEAR(s.ear_sum, std::min(p0, q0) + std::min(p1, q1), kTol);
  // With 2 tokens the top 10 are the whole vocabulary.
  EXPECT_NEAR(s.ear_top10_sum, s.ear_sum, kTol);
  EXPECT_EQ(s.flips, 1);
}

// Two positions, summed: the second agrees with p on the argmax and hits the target.
TEST(ScoreWindowTest, SumsOverPositions) {
  const at::Tensor lp = Logits({0.0f, 2.0f, 0.0f, 2.0f}, 2, 2);
  const at::Tensor lq = Logits({0.0f, 0.0f, 0.0f, 1.0f}, 2, 2);
  const WindowStats s = ScoreWindow(lq, lp, at::tensor({int64_t{1}, int64_t{1}}));
  const double e = std::exp(1.0);
  const double e2 = std::exp(2.0);
  const double p1 = e2 / (1.0 + e2);
  const double p0 = 1.0 - p1;
  const double q1 = e / (1.0 + e);
  const double q0 = 1.0 - q1;
  EXPECT_EQ(s.positions, 2);
  EXPECT_NEAR(s.nll_sum, std::log(2.0) + std::log(1.0 + 1.0 / e), kTol);
  // Position 0 ties (argmax -> token 0, not the target 1); position 1 is right.
  EXPECT_EQ(s.correct, 1);
  EXPECT_EQ(s.flips, 1);
  const double kl0 = p0 * std::log(p0 / 0.5) + p1 * std::log(p1 / 0.5);
  const double kl1 = p0 * std::log(p0 / q0) + p1 * std::log(p1 / q1);
  EXPECT_NEAR(s.kl_sum, kl0 + kl1, kTol);
  // Overlap: position 0 gives min(p0, .5) + min(p1, .5) = p0 + .5; position 1 (p0 < q0 and
  // q1 < p1) gives p0 + q1.
  EXPECT_NEAR(s.ear_sum, (p0 + 0.5) + (p0 + q1), kTol);
}

TEST(ScoreWindowTest, IdenticalLogits) {
  at::manual_seed(1);
  const at::Tensor logits = at::randn({31, 4096}) * 3;
  const at::Tensor targets = at::randint(0, 4096, {31});
  const WindowStats s = ScoreWindow(logits, logits.clone(), targets);
  EXPECT_EQ(s.kl_sum, 0.0);  // lp - lq is exactly 0
  EXPECT_NEAR(s.ear_sum / 31, 1.0, 1e-5);
  EXPECT_EQ(s.flips, 0);
  // EAR_top10 is then the mass of p's top 10.
  const at::Tensor top = std::get<0>(at::softmax(logits, 1).topk(10, 1)).to(at::kDouble).sum();
  EXPECT_NEAR(s.ear_top10_sum, top.item<double>(), 1e-4);
  EXPECT_LT(s.ear_top10_sum, s.ear_sum);
}

// Renaming the tokens (permuting the vocabulary of p, q and the targets together) changes
// nothing: every metric is a function of the distributions, not of token ids.
TEST(ScoreWindowTest, InvariantUnderVocabularyPermutation) {
  at::manual_seed(2);
  const int64_t vocab = 257;
  const at::Tensor lp = at::randn({17, vocab}) * 2;
  const at::Tensor lq = lp + at::randn({17, vocab}) * 0.5;
  const at::Tensor targets = at::randint(0, vocab, {17});
  const at::Tensor perm = at::randperm(vocab);   // new id j holds old token perm[j]
  const at::Tensor inverse = at::argsort(perm);  // old token t now has id inverse[t]
  const WindowStats a = ScoreWindow(lq, lp, targets);
  const WindowStats b = ScoreWindow(lq.index_select(1, perm), lp.index_select(1, perm),
                                    inverse.index_select(0, targets));
  EXPECT_NEAR(a.nll_sum, b.nll_sum, 1e-5);
  EXPECT_NEAR(a.kl_sum, b.kl_sum, 1e-5);
  EXPECT_NEAR(a.ear_sum, b.ear_sum, 1e-5);
  EXPECT_NEAR(a.ear_top10_sum, b.ear_top10_sum, 1e-5);
  EXPECT_EQ(a.correct, b.correct);
  EXPECT_EQ(a.flips, b.flips);
}

// q = p with two tokens swapped: p = softmax(0, 1, 2, 3), q = softmax(0, 1, 3, 2). The overlap
// loses exactly |p2 - p3|; KL = (p3 - p2)(log p3 - log p2); every position flips.
TEST(ScoreWindowTest, KnownPermutation) {
  const at::Tensor lp = Logits({0, 1, 2, 3}, 1, 4);
  const at::Tensor lq = Logits({0, 1, 3, 2}, 1, 4);
  const double z = 1 + std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  const double p2 = std::exp(2.0) / z;
  const double p3 = std::exp(3.0) / z;
  const WindowStats s = ScoreWindow(lq, lp, at::tensor({int64_t{2}}));
  EXPECT_NEAR(s.ear_sum, 1.0 - (p3 - p2), kTol);
  EXPECT_NEAR(s.ear_top10_sum, s.ear_sum, kTol);
  EXPECT_NEAR(s.kl_sum, (p3 - p2) * (std::log(p3) - std::log(p2)), kTol);
  EXPECT_NEAR(s.nll_sum, -std::log(p3), kTol);
  EXPECT_EQ(s.flips, 1);
  EXPECT_EQ(s.correct, 1);
}

TEST(ScoreWindowTest, TopTenIsALowerBoundOfEar) {
  at::manual_seed(3);
  const at::Tensor lp = at::randn({9, 100});
  const at::Tensor lq = at::randn({9, 100});
  const WindowStats s = ScoreWindow(lq, lp, at::randint(0, 100, {9}));
  EXPECT_GT(s.ear_top10_sum, 0);
  EXPECT_LT(s.ear_top10_sum, s.ear_sum);
  EXPECT_GT(s.kl_sum, 0);
}

TEST(ScoreWindowTest, WithoutReference) {
  const at::Tensor lq = Logits({0.0f, 1.0f}, 1, 2);
  const WindowStats s = ScoreWindow(lq, at::Tensor(), at::tensor({int64_t{1}}));
  EXPECT_FALSE(s.has_reference);
  EXPECT_NEAR(s.nll_sum, std::log(1.0 + std::exp(-1.0)), kTol);
  EXPECT_EQ(s.correct, 1);
  EXPECT_EQ(s.kl_sum, 0);
  EXPECT_EQ(s.ear_sum, 0);
  EXPECT_EQ(s.flips, 0);
}

TEST(ScoreWindowTest, EmptyWindow) {
  const WindowStats s =
      ScoreWindow(at::zeros({0, 8}), at::zeros({0, 8}), at::zeros({0}, at::kLong));
  EXPECT_EQ(s.positions, 0);
  EXPECT_EQ(s.nll_sum, 0);
  EXPECT_TRUE(s.has_reference);
}

// A window longer than one CPU chunk (32 rows at vocabulary 4096; 100 = 3 full chunks and a
// partial one) against the definitions computed on the whole tensor at once.
TEST(ScoreWindowTest, ChunkedRowsMatchWholeWindow) {
  at::manual_seed(5);
  const int64_t rows = 100;
  const at::Tensor logits_p = at::randn({rows, 4096}) * 3;
  const at::Tensor logits_q = logits_p + at::randn({rows, 4096}) * 0.4;
  const at::Tensor targets = at::randint(0, 4096, {rows});
  const WindowStats s = ScoreWindow(logits_q, logits_p, targets);
  const at::Tensor lp = at::log_softmax(logits_p.to(at::kDouble), 1);
  const at::Tensor lq = at::log_softmax(logits_q.to(at::kDouble), 1);
  const at::Tensor p = lp.exp();
  const at::Tensor q = lq.exp();
  const at::Tensor overlap = at::minimum(p, q);
  const at::Tensor top = std::get<1>(p.topk(10, 1));
  EXPECT_EQ(s.positions, rows);
  EXPECT_NEAR(s.nll_sum, -lq.gather(1, targets.unsqueeze(1)).sum().item<double>(), 1e-3);
  EXPECT_NEAR(s.kl_sum, (p * (lp - lq)).sum().item<double>(), 1e-4);
  EXPECT_NEAR(s.ear_sum, overlap.sum().item<double>(), 1e-4);
  EXPECT_NEAR(s.ear_top10_sum, overlap.gather(1, top).sum().item<double>(), 1e-4);
  EXPECT_EQ(s.flips, (lp.argmax(1) != lq.argmax(1)).sum().item<int64_t>());
  EXPECT_EQ(s.correct, (lq.argmax(1) == targets).sum().item<int64_t>());
  EXPECT_GT(s.flips, 0);
}

// Logits arrive in bf16 from bf16 compute: the result is that of their exact float32 values.
TEST(ScoreWindowTest, Bf16LogitsAreUpcast) {
  at::manual_seed(4);
  const at::Tensor lp = at::randn({5, 64}).to(at::kBFloat16);
  const at::Tensor lq = at::randn({5, 64}).to(at::kBFloat16);
  const at::Tensor targets = at::randint(0, 64, {5}, at::kInt);
  const WindowStats a = ScoreWindow(lq, lp, targets);
  const WindowStats b = ScoreWindow(lq.to(at::kFloat), lp.to(at::kFloat), targets.to(at::kLong));
  EXPECT_EQ(a.nll_sum, b.nll_sum);
  EXPECT_EQ(a.kl_sum, b.kl_sum);
  EXPECT_EQ(a.ear_sum, b.ear_sum);
}

// A token masked to -inf in both: its p is 0, and 0 * (-inf - -inf) must not poison the KL.
TEST(ScoreWindowTest, MaskedTokensDoNotGiveNaN) {
  const float inf = std::numeric_limits<float>::infinity();
  const at::Tensor lp = Logits({0.0f, -inf, 1.0f}, 1, 3);
  const at::Tensor lq = Logits({0.0f, -inf, 1.0f}, 1, 3);
  const WindowStats s = ScoreWindow(lq, lp, at::tensor({int64_t{2}}));
  EXPECT_FALSE(std::isnan(s.kl_sum));
  EXPECT_NEAR(s.kl_sum, 0.0, kTol);
  EXPECT_NEAR(s.ear_sum, 1.0, kTol);
}

}  // namespace
}  // namespace quant::eval
