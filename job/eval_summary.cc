// Summarize: ratio-of-sums metrics and a percentile bootstrap over windows. Plain C++ (no
// torch): 1000 resamples of ~160 windows is a few hundred thousand additions.
#include "job/eval_summary.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <random>

#include "common/status.h"

namespace quant::eval {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// The 95% percentile interval.
constexpr double kLoPercentile = 2.5;
constexpr double kHiPercentile = 97.5;

// Sums of a set of windows, possibly with repeats.
struct Totals {
  double positions = 0;
  double nll = 0;
  double correct = 0;
  double kl = 0;
  double ear = 0;
  double ear_top10 = 0;
  double flips = 0;

  void Add(const WindowStats& w) {
    positions += static_cast<double>(w.positions);
    nll += w.nll_sum;
    correct += w.correct;
    kl += w.kl_sum;
    ear += w.ear_sum;
    ear_top10 += w.ear_top10_sum;
    flips += w.flips;
  }
};

// The metrics in EvalSummary order: ppl, accuracy, kl, ear, ear_top10, flip_rate.
constexpr int kMetrics = 6;
using MetricValues = std::array<double, kMetrics>;

MetricValues Metrics(const Totals& t) {
  if (t.positions == 0) return {kNaN, kNaN, kNaN, kNaN, kNaN, kNaN};
  return {std::exp(t.nll / t.positions), t.correct / t.positions,   t.kl / t.positions,
          t.ear / t.positions,           t.ear_top10 / t.positions, t.flips / t.positions};
}

// Uniform in [0, n) from the raw 64-bit stream by rejection. std::uniform_int_distribution's
// algorithm differs between standard libraries; this one gives the same draws everywhere.
uint64_t UniformIndex(std::mt19937_64& rng, uint64_t n) {
  const uint64_t limit =
      std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % n;
  uint64_t x = rng();
  while (x >= limit) x = rng();
  return x % n;
}

// Percentile of sorted values with linear interpolation between order statistics (numpy's
// default "linear" method): rank = pct/100 * (n - 1).
double Percentile(const std::vector<double>& sorted, double pct) {
  QUANT_CHECK(!sorted.empty());
  const double rank = pct / 100.0 * static_cast<double>(sorted.size() - 1);
  const size_t below = static_cast<size_t>(std::floor(rank));
  const size_t above = std::min(below + 1, sorted.size() - 1);
  const double frac = rank - static_cast<double>(below);
  return sorted[below] + frac * (sorted[above] - sorted[below]);
}

}  // namespace

EvalSummary Summarize(const std::vector<WindowStats>& windows, int bootstrap_samples,
                      uint64_t seed) {
  EvalSummary summary;
  summary.windows = static_cast<int64_t>(windows.size());
  summary.has_reference = !windows.empty() && windows.front().has_reference;
  Totals all;
  for (const WindowStats& w : windows) {
    QUANT_CHECK(w.has_reference == summary.has_reference);
    QUANT_CHECK(w.positions >= 0);
    all.Add(w);
    summary.positions += w.positions;
  }
  const MetricValues value = Metrics(all);

  // replicates[m] holds metric m of every usable resample. A resample with no positions (only
  // possible when some windows are empty) has no defined ratio and is left out.
  std::array<std::vector<double>, kMetrics> replicates;
  if (summary.positions > 0 && bootstrap_samples > 0) {
    std::mt19937_64 rng(seed);
    const uint64_t n = windows.size();
    for (auto& r : replicates) r.reserve(bootstrap_samples);
    for (int b = 0; b < bootstrap_samples; ++b) {
      Totals t;
      for (uint64_t i = 0; i < n; ++i) t.Add(windows[UniformIndex(rng, n)]);
      if (t.positions == 0) continue;
      const MetricValues v = Metrics(t);
      for (int m = 0; m < kMetrics; ++m) replicates[m].push_back(v[m]);
    }
  }

  std::array<Interval*, kMetrics> out = {&summary.ppl, &summary.accuracy,  &summary.kl,
                                         &summary.ear, &summary.ear_top10, &summary.flip_rate};
  for (int m = 0; m < kMetrics; ++m) {
    out[m]->value = value[m];
    if (replicates[m].empty()) {
      out[m]->lo = value[m];
      out[m]->hi = value[m];
      continue;
    }
    std::sort(replicates[m].begin(), replicates[m].end());
    out[m]->lo = Percentile(replicates[m], kLoPercentile);
    out[m]->hi = Percentile(replicates[m], kHiPercentile);
  }
  return summary;
}

}  // namespace quant::eval
