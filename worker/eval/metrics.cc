// ScoreWindow: whole-vocabulary metrics as tensor ops (one window is [255, 4096] logits, scored
// ~160 times per model per eval), reduced to a handful of doubles with one device sync.
#include "worker/eval/metrics.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>

#include "common/status.h"

namespace quant::eval {

WindowStats ScoreWindow(const at::Tensor& logits_q, const at::Tensor& logits_p,
                        const at::Tensor& targets) {
  QUANT_CHECK(logits_q.defined() && logits_q.dim() == 2);
  QUANT_CHECK(targets.defined() && targets.dim() == 1 && targets.size(0) == logits_q.size(0));
  const bool has_reference = logits_p.defined();
  if (has_reference) QUANT_CHECK(logits_p.sizes() == logits_q.sizes());
  WindowStats stats;
  stats.positions = logits_q.size(0);
  stats.has_reference = has_reference;
  if (stats.positions == 0) return stats;
  QUANT_CHECK(logits_q.size(1) > 0);

  c10::InferenceMode no_autograd;
  const at::Tensor lq = at::log_softmax(logits_q.to(at::kFloat), /*dim=*/1);
  const at::Tensor target_ids = targets.to(lq.device(), at::kLong);
  const at::Tensor nll = -lq.gather(1, target_ids.unsqueeze(1)).squeeze(1);
  const at::Tensor argmax_q = lq.argmax(1);
  const at::Tensor correct = argmax_q == target_ids;
  if (!has_reference) {
    const at::Tensor sums = at::stack({nll, correct.to(at::kFloat)}).to(at::kDouble).sum(1).cpu();
    stats.nll_sum = sums[0].item<double>();
    stats.correct = sums[1].item<double>();
    return stats;
  }

  const at::Tensor lp = at::log_softmax(logits_p.to(lq.device(), at::kFloat), /*dim=*/1);
  const at::Tensor p = lp.exp();
  const at::Tensor q = lq.exp();
  // log_softmax of finite logits is finite, so p * (lp - lq) is finite even where p underflows
  // to 0. Only -inf logits (masked tokens) give 0 * inf = NaN; those rows take the masked form,
  // which costs a pass over the vocabulary and so is not paid on every row.
  at::Tensor kl = (p * (lp - lq)).sum(1);
  const at::Tensor kl_nan = at::isnan(kl);
  if (kl_nan.any().item<bool>()) {
    const at::Tensor masked = at::where(p > 0, p * (lp - lq), at::zeros_like(p)).sum(1);
    kl = at::where(kl_nan, masked, kl);
  }
  const at::Tensor overlap = at::minimum(p, q);
  const at::Tensor ear = overlap.sum(1);
  const int64_t k = std::min<int64_t>(kEarTopK, p.size(1));
  const at::Tensor top_ids = std::get<1>(p.topk(k, /*dim=*/1));
  const at::Tensor ear_top = overlap.gather(1, top_ids).sum(1);
  const at::Tensor flips = lp.argmax(1) != argmax_q;

  // Per-position values are float32; the sums over positions are taken in double.
  const at::Tensor sums = at::stack({nll, correct.to(at::kFloat), kl, ear, ear_top,
                                     flips.to(at::kFloat)})
                              .to(at::kDouble)
                              .sum(1)
                              .cpu();
  const double* s = sums.data_ptr<double>();
  stats.nll_sum = s[0];
  stats.correct = s[1];
  stats.kl_sum = s[2];
  stats.ear_sum = s[3];
  stats.ear_top10_sum = s[4];
  stats.flips = s[5];
  return stats;
}

}  // namespace quant::eval
