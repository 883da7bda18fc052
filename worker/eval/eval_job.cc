// RunEvalJob: windows by the shared recipe, layer-by-layer forward of candidate and reference
// (one layer's weights resident at a time), scoring on the final hidden states in batches.
#include "worker/eval/eval_job.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "worker/eval/eval_pipeline.h"
#include "worker/eval/metrics.h"
#include "worker/model/model.h"
#include "worker/quant/quantizer.h"
#include "job/scope.h"
#include "worker/tokenizer/text_stream.h"
#include "worker/tokenizer/tokenizer.h"

namespace quant::eval {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}


}  // namespace

absl::StatusOr<at::Tensor> RunToFinalHidden(const model::Model& model,
                                            const model::WeightTransform* transform,
                                            const at::Tensor& windows, int batch,
                                            const std::string& label, const ProgressFn& progress,
                                            const std::function<bool()>& should_stop) {
  const int64_t n = windows.size(0);
  const int layers = model.config().num_layers;
  std::vector<at::Tensor> hidden;
  for (int64_t b = 0; b < n; b += batch) {
    ASSIGN_OR_RETURN(at::Tensor h, model.Embed(windows.narrow(0, b, std::min<int64_t>(batch, n - b))));
    hidden.push_back(h);
  }
  for (int layer = 0; layer < layers; ++layer) {
    if (should_stop && should_stop()) {
      return absl::CancelledError(absl::StrCat(label, ": stopped before layer ", layer, " of ",
                                               layers));
    }
    ASSIGN_OR_RETURN(model::LayerWeights w, model.LoadLayer(layer, transform));
    for (at::Tensor& h : hidden) h = model.LayerForward(w, h, nullptr);
    if (progress) progress(label, layer + 1, layers);
  }
  ASSIGN_OR_RETURN(model::Model::Head head, model.LoadHead());
  for (at::Tensor& h : hidden) h = model.FinalNorm(head, h);
  return at::cat(hidden, 0);
}

absl::StatusOr<at::Tensor> MakeWindows(const std::vector<int32_t>& ids, int window_tokens,
                                       int64_t bos_id, const std::string& text_label) {
  if (window_tokens < 2) return absl::InvalidArgumentError("window length must be at least 2");
  const int64_t body = window_tokens - 1;
  const int64_t n_windows = static_cast<int64_t>(ids.size()) / body;
  if (n_windows == 0) {
    return absl::InvalidArgumentError(absl::StrCat(text_label, ": ", ids.size(),
                                                   " tokens, too short for one window of ", body));
  }
  at::Tensor windows = at::empty({n_windows, window_tokens}, at::kLong);
  int64_t* wp = windows.data_ptr<int64_t>();
  for (int64_t w = 0; w < n_windows; ++w) {
    wp[w * window_tokens] = bos_id;
    for (int64_t i = 0; i < body; ++i) wp[w * window_tokens + 1 + i] = ids[w * body + i];
  }
  return windows;
}

absl::StatusOr<std::vector<WindowStats>> ScoreHidden(const model::Model& candidate,
                                                     const at::Tensor& hq,
                                                     const model::Model* reference,
                                                     const at::Tensor& hp,
                                                     const at::Tensor& windows, int batch,
                                                     const ProgressFn& progress,
                                                     const std::function<bool()>& should_stop) {
  const int64_t n_windows = windows.size(0);
  const int64_t body = windows.size(1) - 1;
  ASSIGN_OR_RETURN(model::Model::Head head_q, candidate.LoadHead());
  std::optional<model::Model::Head> head_p;
  if (reference != nullptr) {
    ASSIGN_OR_RETURN(head_p, reference->LoadHead());
  }
  std::vector<WindowStats> stats;
  stats.reserve(n_windows);
  for (int64_t b = 0; b < n_windows; b += batch) {
    if (should_stop && should_stop()) {
      return absl::CancelledError(absl::StrCat("scoring stopped before window ", b, " of ",
                                               n_windows));
    }
    const int64_t m = std::min<int64_t>(batch, n_windows - b);
    at::Tensor lq = candidate.Logits(head_q, hq.narrow(0, b, m));
    at::Tensor lp = reference ? reference->Logits(*head_p, hp.narrow(0, b, m)) : at::Tensor();
    for (int64_t i = 0; i < m; ++i) {
      at::Tensor targets = windows[b + i].narrow(0, 1, body).to(lq.device());
      stats.push_back(ScoreWindow(lq[i].narrow(0, 0, body),
                                  reference ? lp[i].narrow(0, 0, body) : at::Tensor(), targets));
    }
    if (progress) progress("score", b + m, n_windows);
  }
  return stats;
}

absl::StatusOr<model::WeightTransform> MakeFakeQuantTransform(const FakeQuantOptions& fq,
                                                     std::string* summary,
                                                     std::shared_ptr<int64_t> counter) {
  if (fq.method != "rtn") {
    return absl::InvalidArgumentError(
        absl::StrCat("--fake-quant: unknown method '", fq.method, "' (supported: rtn)"));
  }
  quant::QuantScheme scheme;
  scheme.bits = fq.bits;
  scheme.group_size = fq.group_size;
  if (fq.grid == "sym") {
    scheme.grid = quant::Grid::kSymmetric;
  } else if (fq.grid == "asym") {
    scheme.grid = quant::Grid::kAsymmetric;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--grid: '", fq.grid, "' is not one of sym, asym"));
  }
  RETURN_IF_ERROR(quant::ValidateScheme(scheme));
  ASSIGN_OR_RETURN(quant::Scope scope, quant::ParseScope(fq.scope));
  *summary = absl::StrFormat("%s %d-bit %s g%d scope %s", fq.method, fq.bits, fq.grid,
                             fq.group_size, fq.scope);
  return model::WeightTransform(
      [scheme, scope, counter](const std::string& name,
                               const at::Tensor& w) -> absl::StatusOr<at::Tensor> {
        if (!quant::InQuantScope(name, scope)) return w;
        quant::RtnQuantizer rtn;
        ASSIGN_OR_RETURN(quant::QuantizedWeight q, rtn.Quantize(w, scheme, quant::UnitContext{}));
        ++*counter;
        return q.Dequantize();
      });
}

int64_t PeakRssBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      return std::stoll(line.substr(6)) * 1024;  // reported in kB
    }
  }
  return 0;
}

absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> LoadModelTokenizer(
    const storage::Checkpoint& checkpoint) {
  constexpr uint64_t kMaxTokenizerBytes = 1ull << 30;
  constexpr char kTokenizerFile[] = "tokenizer.json";
  ASSIGN_OR_RETURN(std::string json, checkpoint.store().Read(kTokenizerFile, kMaxTokenizerBytes));
  return tokenizer::Tokenizer::FromJson(json, checkpoint.store().Label(kTokenizerFile));
}

absl::StatusOr<EvalJobResult> RunEvalJob(const EvalJobOptions& options,
                                         const ProgressFn& progress) {
  const auto start = Clock::now();
  EvalJobResult result;
  if (options.threads > 0) at::set_num_threads(options.threads);
  if (options.window_tokens < 2) {
    return absl::InvalidArgumentError("window length must be at least 2 tokens");
  }
  if (options.max_windows < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-windows: ", options.max_windows, " is negative"));
  }
  ASSIGN_OR_RETURN(model::ComputeDType compute, model::ParseComputeDType(options.compute));

  // Validate everything before the expensive part: models, tokenizer, text, quantizer options.
  ASSIGN_OR_RETURN(std::unique_ptr<model::Model> candidate,
                   model::Model::Open(options.model_dir, compute));
  std::unique_ptr<model::Model> reference;
  if (!options.reference_dir.empty()) {
    ASSIGN_OR_RETURN(reference, model::Model::Open(options.reference_dir, model::ComputeDType::kF32));
    if (reference->config().vocab_size != candidate->config().vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--reference ", options.reference_dir, ": vocabulary size ",
          reference->config().vocab_size, " differs from the model's ",
          candidate->config().vocab_size));
    }
  } else if (options.fake_quant) {
    ASSIGN_OR_RETURN(reference, model::Model::Open(options.model_dir, model::ComputeDType::kF32));
  }
  const at::Device device(options.device == "cuda" ? at::kCUDA : at::kCPU);
  candidate->SetDevice(device);
  if (reference) reference->SetDevice(device);
  auto fq_count = std::make_shared<int64_t>(0);
  std::optional<model::WeightTransform> transform;
  if (options.fake_quant) {
    ASSIGN_OR_RETURN(transform,
                     MakeFakeQuantTransform(*options.fake_quant, &result.fake_quant_summary, fq_count));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<tokenizer::Tokenizer> tok,
                   LoadModelTokenizer(candidate->checkpoint()));

  // The text is read and encoded a chunk at a time (ids identical to encoding it whole), and
  // only as far as the windows scored need: memory follows those windows, not the file.
  const auto tokenize_start = Clock::now();
  const int64_t body = options.window_tokens - 1;
  const int64_t max_tokens =
      options.max_windows > 0 && options.max_windows <= std::numeric_limits<int64_t>::max() / body
          ? options.max_windows * body
          : -1;  // all windows, or more than any text could fill
  ASSIGN_OR_RETURN(tokenizer::EncodedText text,
                   tokenizer::EncodeFile(*tok, options.text_path, "text file", max_tokens));
  result.tokenize_seconds = Seconds(tokenize_start);
  result.text_bytes = text.bytes_read;
  result.text_tokens = static_cast<int64_t>(text.ids.size());
  const int64_t bos = candidate->checkpoint().config().value("bos_token_id", 0);
  ASSIGN_OR_RETURN(at::Tensor windows,
                   MakeWindows(text.ids, options.window_tokens, bos, options.text_path));
  text.ids = {};  // the windows hold them now
  const int64_t n_windows = windows.size(0);

  const auto forward_start = Clock::now();
  const int batch = std::max(1, options.batch_windows);
  ASSIGN_OR_RETURN(at::Tensor hq, RunToFinalHidden(*candidate, transform ? &*transform : nullptr,
                                                   windows, batch, "model", progress,
                                                   options.should_stop));
  at::Tensor hp;
  if (reference) {
    ASSIGN_OR_RETURN(hp, RunToFinalHidden(*reference, nullptr, windows, batch, "reference",
                                          progress, options.should_stop));
  }
  ASSIGN_OR_RETURN(std::vector<WindowStats> stats,
                   ScoreHidden(*candidate, hq, reference.get(), hp, windows, batch, progress,
                               options.should_stop));
  result.forward_seconds = Seconds(forward_start);
  result.forward_tokens = n_windows * options.window_tokens;
  result.summary = Summarize(stats, options.bootstrap_samples);
  result.window_stats = stats;
  if (options.fake_quant) {
    result.fake_quant_summary += absl::StrCat(": ", *fq_count, " linears quantized");
  }
  result.model_bytes = static_cast<int64_t>(candidate->checkpoint().total_bytes());
  result.total_seconds = Seconds(start);
  result.peak_rss_bytes = PeakRssBytes();
  return result;
}

}  // namespace quant::eval
