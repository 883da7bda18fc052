// The quantization job behind `qctl quantize` (torch-free header): the planner's tasks run
// in-process, layer by layer (calibrate -> quantize -> propagate), then write and evaluate.
// The distributed service runs the very same task code (DESIGN.md section 4).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/eval/summary.h"

namespace quant::tasks {

// Every option of a job; validated before anything runs. Defaults from DESIGN.md section 5.
struct QuantizeJobSpec {
  std::string model_dir;
  std::string out_dir;
  std::string method = "gsq";          // rtn | gptq | gsq
  int bits = 4;                        // 2..8
  std::string grid = "sym";            // sym | asym
  int group_size = 128;
  bool channel_fallback = true;        // per-channel when the group does not divide
  std::string scope = "experts";       // experts | all
  std::string calib_path;              // default: ../shared/data/calib/calib.txt
  int64_t calib_tokens = 384 * 256;    // the reference's 384 windows of 256 tokens
  int window_tokens = 256;            // --seq-len: the window length, BOS included
  // --calib-samples: records read from a .jsonl/directory source, or windows cut from a plain
  // text (then instead of calib_tokens / window_tokens); 0: no cap (calib_tokens decides).
  int64_t calib_samples = 0;
  int steps = 640;                     // GSQ steps per layer
  std::string objective = "expert-output";  // expert-output | layer-local
  std::string export_format = "vllm";  // vllm | native
  uint64_t seed = 0;
  int threads = 2;
  std::string device = "cpu";          // cpu | cuda (GSQ's steps on the GPU; the rest on CPU)
  bool overwrite = false;
  double damp = 0.01;
  bool act_order = false;
  bool mse_scale_search = true;
  int batch_windows = 16;              // windows per forward batch and per GSQ step
  std::string eval_text;               // default: ../shared/data/eval/kjv_val.txt; "" + no_eval
  bool evaluate = true;
  // Which layers make the next layer's calibration inputs: "quantized" (GPTQ/GSQ, DESIGN.md 4)
  // or "original" (every layer calibrated on the full-precision model's activations).
  std::string calib_inputs = "quantized";
  // SLQ (DESIGN.md section 6): a probe pass and a global solve give each unit its bits.
  bool slq = false;
  double slq_budget = 0;               // average bits over the quantized weights (--bits 3.5)
  double target_ear = 0;               // > 0: fewest bits with predicted EAR >= this instead
  std::vector<int> slq_bits = {2, 3, 4, 5, 6, 8};  // candidate bitwidths
  int probe_windows = 32;              // calibration windows each probe is scored on
  std::string probe_cache_dir;         // "": no cache
  std::string slq_allocation;          // JSON {unit: bits} used instead of the solve
  // Each routed expert's gate_up and down_proj are their own units (probed and solved apart)
  // instead of one tied unit per layer; needs the native export (vLLM's fused MoE kernels take
  // one scheme for all experts of a layer).
  bool per_expert_bits = false;
  // With per_expert_bits: how the experts of one layer and projection add up in the solve
  // (worker/tasks/slq_expert_model.h): "sum" of their single-expert probes, or calibrated by one
  // tied probe per layer, projection and bitwidth: "scale" or "power". "" is "scale", chosen by
  // measurement (docs/results.md, "Per-expert bits with a per-layer calibration").
  std::string expert_aggregation;
  // Expert-parallel shards of each MoE layer (the service's gang size): GSQ tasks per layer,
  // and workers that calibrate and propagate a layer together, each holding its own experts.
  // Not part of the result: any value gives the same checkpoint.
  int expert_shards = 1;

  nlohmann::json ToJson() const;
};

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

// SLQ's solve runs on the coordinator's side (coordinator/slq): the job hands it the probe table
// and gets a bitwidth per unit back. One entry per unit (tied linears are one unit).
struct SlqUnitTable {
  std::string unit;
  int64_t params = 0;
  std::vector<int> bits;          // candidate bitwidths
  std::vector<double> loss;       // the predicted loss at each: KL (budget) or 1 - EAR (target)
};
struct SlqAllocation {
  std::vector<int> bits;          // per unit, in the table's order
  double average_bits = 0;
  double optimality_gap = 0;
  bool exact = false;
};
// target = false: least loss with average bits <= limit; true: fewest bits with loss <= limit.
using SlqSolveFn = std::function<absl::StatusOr<SlqAllocation>(
    const std::vector<SlqUnitTable>& table, bool target, double limit)>;

// Checks every field (and the files it names) without running anything heavy.
absl::Status ValidateSpec(const QuantizeJobSpec& spec);

// `solve` is needed for SLQ jobs (spec.slq) only.
absl::StatusOr<QuantizeJobResult> RunQuantizeJob(const QuantizeJobSpec& spec,
                                                 const ProgressFn& progress,
                                                 const SlqSolveFn& solve = nullptr);

}  // namespace quant::tasks
