// Summarize: ratio-of-sums values and the fixed-seed percentile bootstrap.
#include "job/eval_summary.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace quant::eval {
namespace {

WindowStats Window(int64_t positions, double nll, double correct, double kl, double ear,
                   double ear_top10, double flips) {
  WindowStats w;
  w.positions = positions;
  w.nll_sum = nll;
  w.correct = correct;
  w.has_reference = true;
  w.kl_sum = kl;
  w.ear_sum = ear;
  w.ear_top10_sum = ear_top10;
  w.flips = flips;
  return w;
}

// Windows whose per-position metrics vary like real text windows do (nll ~3.2 nats/position:
// ppl ~25, the tiny models' level in README), drawn with a fixed seed.
std::vector<WindowStats> SyntheticWindows(int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nll(3.2, 0.3);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  constexpr int64_t kPositions = 255;  // the shared recipe's predicted positions per window
  std::vector<WindowStats> windows;
  for (int i = 0; i < n; ++i) {
    windows.push_back(Window(kPositions, nll(rng) * kPositions, 0.35 * kPositions,
                             0.02 * kPositions * (0.5 + unit(rng)),
                             kPositions * (0.9 + 0.05 * unit(rng)),
                             kPositions * (0.6 + 0.1 * unit(rng)), 0.1 * kPositions * unit(rng)));
  }
  return windows;
}

double Width(const Interval& i) { return i.hi - i.lo; }

TEST(SummarizeTest, RatioOfSums) {
  // Windows of unequal length: the ratio of sums weighs positions, not windows.
  const std::vector<WindowStats> windows = {Window(1, 2.0, 1, 0.1, 0.9, 0.5, 0),
                                            Window(3, 3.0, 0, 0.3, 2.4, 1.5, 3)};
  const EvalSummary s = Summarize(windows);
  EXPECT_EQ(s.windows, 2);
  EXPECT_EQ(s.positions, 4);
  EXPECT_TRUE(s.has_reference);
  EXPECT_DOUBLE_EQ(s.ppl.value, std::exp(5.0 / 4.0));
  EXPECT_DOUBLE_EQ(s.accuracy.value, 0.25);
  EXPECT_DOUBLE_EQ(s.kl.value, 0.1);
  EXPECT_DOUBLE_EQ(s.ear.value, 3.3 / 4.0);
  EXPECT_DOUBLE_EQ(s.ear_top10.value, 0.5);
  EXPECT_DOUBLE_EQ(s.flip_rate.value, 0.75);
}

TEST(SummarizeTest, IntervalsContainTheValue) {
  const EvalSummary s = Summarize(SyntheticWindows(160, 1));
  for (const Interval* i : {&s.ppl, &s.accuracy, &s.kl, &s.ear, &s.ear_top10, &s.flip_rate}) {
    EXPECT_LE(i->lo, i->value);
    EXPECT_GE(i->hi, i->value);
  }
  EXPECT_LT(s.ppl.lo, s.ppl.hi);
  EXPECT_LT(s.kl.lo, s.kl.hi);
}

// The interval shrinks roughly as 1/sqrt(windows): 16x the windows, about a quarter the width.
TEST(SummarizeTest, NarrowsWithMoreWindows) {
  const EvalSummary few = Summarize(SyntheticWindows(20, 2));
  const EvalSummary many = Summarize(SyntheticWindows(320, 2));
  EXPECT_LT(Width(many.ppl), 0.5 * Width(few.ppl));
  EXPECT_LT(Width(many.kl), 0.5 * Width(few.kl));
  EXPECT_LT(Width(many.flip_rate), 0.5 * Width(few.flip_rate));
}

TEST(SummarizeTest, DeterministicForASeed) {
  const std::vector<WindowStats> windows = SyntheticWindows(50, 3);
  const EvalSummary a = Summarize(windows, 500, 7);
  const EvalSummary b = Summarize(windows, 500, 7);
  EXPECT_EQ(a.ppl.lo, b.ppl.lo);
  EXPECT_EQ(a.ppl.hi, b.ppl.hi);
  EXPECT_EQ(a.kl.lo, b.kl.lo);
  EXPECT_EQ(a.ear.hi, b.ear.hi);
  const EvalSummary c = Summarize(windows, 500, 8);
  EXPECT_EQ(a.ppl.value, c.ppl.value);
  EXPECT_NE(a.ppl.lo, c.ppl.lo);
}

// Identical windows: every resample is the same, so the interval collapses to the value.
TEST(SummarizeTest, IdenticalWindowsGiveAPointInterval) {
  const std::vector<WindowStats> windows(10, Window(255, 800, 90, 5, 240, 170, 20));
  const EvalSummary s = Summarize(windows);
  EXPECT_DOUBLE_EQ(s.ppl.lo, s.ppl.value);
  EXPECT_DOUBLE_EQ(s.ppl.hi, s.ppl.value);
  EXPECT_DOUBLE_EQ(s.ear.lo, s.ear.hi);
}

TEST(SummarizeTest, NoBootstrap) {
  const EvalSummary s = Summarize(SyntheticWindows(10, 4), 0);
  EXPECT_EQ(s.ppl.lo, s.ppl.value);
  EXPECT_EQ(s.ppl.hi, s.ppl.value);
}

TEST(SummarizeTest, NoWindowsOrNoPositions) {
  const EvalSummary none = Summarize({});
  EXPECT_EQ(none.windows, 0);
  EXPECT_FALSE(none.has_reference);
  EXPECT_TRUE(std::isnan(none.ppl.value));
  WindowStats empty;
  const EvalSummary zero = Summarize({empty, empty});
  EXPECT_EQ(zero.windows, 2);
  EXPECT_EQ(zero.positions, 0);
  EXPECT_TRUE(std::isnan(zero.ppl.value));
}

// Empty windows among full ones: resamples of only empty windows are skipped, not NaN.
TEST(SummarizeTest, EmptyWindowsDoNotPoisonTheBootstrap) {
  WindowStats empty;
  WindowStats full;
  full.positions = 10;
  full.nll_sum = 30;
  const EvalSummary s = Summarize({empty, full}, 200);
  EXPECT_FALSE(s.has_reference);
  EXPECT_DOUBLE_EQ(s.ppl.value, std::exp(3.0));
  EXPECT_DOUBLE_EQ(s.ppl.lo, std::exp(3.0));
  EXPECT_DOUBLE_EQ(s.ppl.hi, std::exp(3.0));
}

}  // namespace
}  // namespace quant::eval
