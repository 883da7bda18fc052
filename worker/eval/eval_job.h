// The evaluation job behind `qctl eval` (torch-free header: qctl does not include libtorch):
// tokenize a text by the shared recipe, run candidate and reference layer by layer, score.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "job/eval_summary.h"

namespace quant::storage {
class Checkpoint;
}  // namespace quant::storage
namespace quant::tokenizer {
class Tokenizer;
}  // namespace quant::tokenizer

namespace quant::eval {

// In-memory fake quantization of the candidate (RTN anchor, DESIGN.md section 5).
struct FakeQuantOptions {
  std::string method = "rtn";
  int bits = 4;
  std::string grid = "sym";      // sym | asym
  std::string scope = "experts"; // experts | all
  int group_size = 128;
};

struct EvalJobOptions {
  std::string model_dir;
  std::string reference_dir;      // empty: none (or the model itself with fake quantization)
  std::string text_path;
  std::string compute = "fp32";   // candidate compute dtype; the reference is always fp32
  std::optional<FakeQuantOptions> fake_quant;
  int window_tokens = 256;        // BOS + 255 text tokens (the shared recipe)
  int batch_windows = 16;         // windows per forward batch: bounds activation memory
  // Score only the first max_windows windows (0: all of them). The text is read only as far as
  // they need, so memory follows them rather than the file's size.
  int64_t max_windows = 0;
  int bootstrap_samples = 1000;
  int threads = 0;                // 0: leave libtorch's default
  std::string device = "cpu";     // cpu | cuda: where both models' weights and activations live
  std::function<bool()> should_stop;  // asked per layer and per scored batch: Cancelled if true
};

struct EvalJobResult {
  EvalSummary summary;
  std::vector<WindowStats> window_stats;  // per evaluation window, in order (paired comparisons)
  int64_t text_bytes = 0;         // bytes of the text read: all unless max_windows
  int64_t text_tokens = 0;        // tokens of what was read
  double tokenize_seconds = 0;
  double forward_seconds = 0;     // candidate + reference forward and scoring
  double total_seconds = 0;
  int64_t forward_tokens = 0;     // tokens pushed through each model
  int64_t peak_rss_bytes = 0;
  int64_t model_bytes = 0;        // the candidate checkpoint's shard bytes
  std::string fake_quant_summary; // e.g. "rtn 2-bit sym g128 experts: 1536 linears"
};

// (phase, done, total) for a progress bar.
using ProgressFn = std::function<void(const std::string& phase, int64_t done, int64_t total)>;

absl::StatusOr<EvalJobResult> RunEvalJob(const EvalJobOptions& options, const ProgressFn& progress);

// The tokenizer.json beside a checkpoint's weights (a directory or an s3:// prefix).
absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> LoadModelTokenizer(
    const storage::Checkpoint& checkpoint);

// Peak resident set size of this process (VmHWM), bytes.
int64_t PeakRssBytes();

}  // namespace quant::eval
