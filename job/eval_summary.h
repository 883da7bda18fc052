// Per-window metric sums and their summary with bootstrap intervals (DESIGN.md section 5).
// Torch-free, so that clients (qctl) can include it without libtorch.
#pragma once

#include <cstdint>
#include <vector>

namespace quant::eval {

// Sums over the predicted positions of one window.
struct WindowStats {
  int64_t positions = 0;
  double nll_sum = 0;  // -log q(target), nats
  double correct = 0;  // argmax q == target
  // Only with a reference p (has_reference):
  bool has_reference = false;
  double kl_sum = 0;         // sum_x p log(p/q), nats
  double ear_sum = 0;        // sum_x min(p, q), full vocabulary
  double ear_top10_sum = 0;  // sum over p's top-10 tokens of min(p, q)
  double flips = 0;          // argmax p != argmax q
};

struct Interval {
  double value = 0;  // on all windows
  double lo = 0;     // 2.5th percentile of the bootstrap
  double hi = 0;     // 97.5th percentile
};

struct EvalSummary {
  int64_t windows = 0;
  int64_t positions = 0;
  bool has_reference = false;
  Interval ppl, accuracy, kl, ear, ear_top10, flip_rate;
};

// 1000 resamples: the usual count for percentile intervals (Efron & Tibshirani 1993, ch. 13);
// the seed is arbitrary but fixed (STYLE.md 10).
inline constexpr int kDefaultBootstrapSamples = 1000;
inline constexpr uint64_t kDefaultBootstrapSeed = 0x5eed;

// Ratio-of-sums metrics (ppl = exp(sum nll / sum positions), the others sum / positions) with a
// percentile bootstrap that resamples windows with replacement; fixed seed, so the same input
// gives the same intervals on every platform. Precondition: all windows agree on has_reference.
// With no positions at all every value is NaN. bootstrap_samples <= 0: lo = hi = value.
EvalSummary Summarize(const std::vector<WindowStats>& windows,
                      int bootstrap_samples = kDefaultBootstrapSamples,
                      uint64_t seed = kDefaultBootstrapSeed);

}  // namespace quant::eval
