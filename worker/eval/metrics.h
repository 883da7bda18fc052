// Evaluation metrics of a candidate model against the original (DESIGN.md section 5): perplexity,
// KL(p||q), EAR (full vocabulary), EAR_top10, flip rate, next-token accuracy, with bootstrap 95%
// intervals over evaluation windows.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

namespace quant::eval {

// Sums over the predicted positions of one window.
struct WindowStats {
  int64_t positions = 0;
  double nll_sum = 0;        // -log q(target)
  double correct = 0;        // argmax q == target
  // Only with a reference p:
  double kl_sum = 0;         // sum_x p log(p/q)
  double ear_sum = 0;        // sum_x min(p, q), full vocabulary
  double ear_top10_sum = 0;  // sum over p's top-10 tokens of min(p, q)
  double flips = 0;          // argmax p != argmax q
};

// logits_q: candidate [T, V]; logits_p: reference [T, V] or undefined; targets: int64 [T].
// Computed in float32 (logits are upcast). T may be 0.
WindowStats ScoreWindow(const at::Tensor& logits_q, const at::Tensor& logits_p,
                        const at::Tensor& targets);

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

// Ratio-of-sums metrics (ppl = exp(sum nll / sum positions)) with a percentile bootstrap that
// resamples windows with replacement; fixed seed, so the same input gives the same intervals.
EvalSummary Summarize(const std::vector<WindowStats>& windows, int bootstrap_samples = 1000,
                      uint64_t seed = 0x5eed);

}  // namespace quant::eval
