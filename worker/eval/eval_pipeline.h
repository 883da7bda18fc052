// The pieces of an evaluation run (torch-facing): windows by the shared recipe, a layer-by-layer
// forward over all windows, and scoring of candidate against reference hidden states.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/eval/eval_job.h"
#include "worker/eval/metrics.h"
#include "worker/model/model.h"

namespace quant::eval {

// Non-overlapping windows of `window_tokens` = BOS + (window_tokens - 1) text tokens; the last
// partial window is dropped. int64 [N, window_tokens]. Error when not one window fits.
absl::StatusOr<at::Tensor> MakeWindows(const std::vector<int32_t>& ids, int window_tokens,
                                       int64_t bos_id, const std::string& text_label);

// Runs `model` over all windows, one layer's weights resident at a time, `batch` windows per
// forward; returns the final-normed hidden states [N, T, H] in the compute dtype.
// `should_stop`, asked before each layer, ends it with Cancelled (a cancelled service task).
absl::StatusOr<at::Tensor> RunToFinalHidden(const model::Model& model,
                                            const model::WeightTransform* transform,
                                            const at::Tensor& windows, int batch,
                                            const std::string& label, const ProgressFn& progress,
                                            const std::function<bool()>& should_stop = nullptr);

// Per-window statistics of candidate hidden states against reference ones (reference may be
// null / hp undefined: perplexity and accuracy only).
absl::StatusOr<std::vector<WindowStats>> ScoreHidden(const model::Model& candidate,
                                                     const at::Tensor& hq,
                                                     const model::Model* reference,
                                                     const at::Tensor& hp,
                                                     const at::Tensor& windows, int batch,
                                                     const ProgressFn& progress,
                                                     const std::function<bool()>& should_stop =
                                                         nullptr);

// RTN fake quantization of every in-scope linear as it is loaded; `summary` describes it and
// `counter` counts the linears quantized.
absl::StatusOr<model::WeightTransform> MakeFakeQuantTransform(const FakeQuantOptions& options,
                                                              std::string* summary,
                                                              std::shared_ptr<int64_t> counter);

}  // namespace quant::eval
