// What a quantization job reports (torch-free header; the spec and SLQ's tables are job/'s):
// the written checkpoint's bits, the evaluation, and the time of each phase and task.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "job/eval_summary.h"
#include "job/job_spec.h"
#include "job/slq_tables.h"

namespace quant::tasks {

struct PhaseTiming {
  std::string phase;
  double seconds = 0;
  int64_t peak_rss_bytes = 0;  // of the process, at the end of the phase
};

struct QuantizeJobResult {
  std::string out_dir;
  std::string report_path;
  int64_t uploaded_bytes = 0;  // published to an s3:// out (0 for a local one)
  int64_t units = 0;
  std::vector<std::string> fallback_experts;  // saw no calibration token: H = I
  double bits_per_quantized_param_true = 0, bits_per_quantized_param_stored = 0;
  double bits_per_param_true = 0, bits_per_param_stored = 0;
  std::string container_note;
  bool evaluated = false;
  eval::EvalSummary eval;
  std::vector<eval::WindowStats> eval_windows;  // per window: two runs compare paired by window
  std::vector<PhaseTiming> phases;
  // Every task the planner ran, in order: its name (e.g. "L3/gsq") and seconds (device work
  // included: the GPU is synchronised at each task's end).
  std::vector<std::pair<std::string, double>> tasks;
  double gsq_mean_changed_fraction = 0;
  double gsq_mean_loss_ratio = 0;  // mean over units of loss_after / loss_before
  nlohmann::json slq;              // the solve's report (SLQ jobs)
  int64_t resumed_tasks = 0;       // finished by an interrupted run and skipped (--resume)
};

using ProgressFn = std::function<void(const std::string& phase, int64_t done, int64_t total)>;

}  // namespace quant::tasks
