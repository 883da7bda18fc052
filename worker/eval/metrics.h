// Evaluation metrics of a candidate model against the original (DESIGN.md section 5): perplexity,
// KL(p||q), EAR (full vocabulary), EAR_top10, flip rate, next-token accuracy, with bootstrap 95%
// intervals over evaluation windows.
#pragma once

#include <ATen/ATen.h>

#include "job/eval_summary.h"

namespace quant::eval {

// EAR_top10 sums over this many of the reference's most likely tokens (DESIGN.md section 5).
inline constexpr int64_t kEarTopK = 10;

// logits_q: candidate [T, V]; logits_p: reference [T, V] or undefined; targets: integer [T] in
// [0, V). Any floating dtype and device; computed in float32 (logits are upcast), summed in
// double. T may be 0. Ties in argmax go to the lowest token id.
WindowStats ScoreWindow(const at::Tensor& logits_q, const at::Tensor& logits_p,
                        const at::Tensor& targets);

}  // namespace quant::eval
