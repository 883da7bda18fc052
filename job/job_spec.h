// A quantize job's options as the service receives them (torch-free: the coordinator parses and
// checks every field of a submitted job before anything runs; DESIGN.md section 8). The JSON is
// QuantizeJobSpec::ToJson's (plus "out"); parsing refuses unknown keys, wrong types and values
// outside their ranges with one line naming the field.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "job/job_enums.h"
#include "nlohmann/json.hpp"

namespace quant::tasks {

// Every option of a job; validated before anything runs. Defaults from DESIGN.md section 5.
struct QuantizeJobSpec {
  std::string model_dir;
  std::string out_dir;
  Method method = Method::kGsq;
  int bits = 4;                        // 2..8
  quant::Grid grid = quant::Grid::kSymmetric;
  int group_size = 128;
  bool channel_fallback = true;        // per-channel when the group does not divide
  quant::Scope scope = quant::Scope::kExperts;
  std::string calib_path;              // default: ../shared/data/calib/calib.txt
  int64_t calib_tokens = 384 * 256;    // the reference's 384 windows of 256 tokens
  int window_tokens = 256;            // --seq-len: the window length, BOS included
  // --calib-samples: records read from a .jsonl/directory source, or windows cut from a plain
  // text (then instead of calib_tokens / window_tokens); 0: no cap (calib_tokens decides).
  int64_t calib_samples = 0;
  int steps = 640;                     // GSQ steps per layer
  quant::GsqObjective objective = quant::GsqObjective::kExpertOutput;
  quant::ExportFormat export_format = quant::ExportFormat::kVllm;
  uint64_t seed = 0;
  int threads = 2;
  Device device = Device::kCpu;
  bool overwrite = false;
  double damp = 0.01;
  bool act_order = false;
  bool mse_scale_search = true;
  int batch_windows = 16;              // windows per forward batch and per GSQ step
  std::string eval_text;               // default: ../shared/data/eval/kjv_val.txt; "" + no_eval
  bool evaluate = true;
  CalibInputs calib_inputs = CalibInputs::kQuantized;
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
  // (job/slq_expert_model.h): "sum" of their single-expert probes, or calibrated by one
  // tied probe per layer, projection and bitwidth: "scale" or "power". "" is "scale", chosen by
  // measurement (docs/results.md, "Per-expert bits with a per-layer calibration").
  std::string expert_aggregation;
  // Expert-parallel shards of each MoE layer (the service's gang size): GSQ tasks per layer,
  // and workers that calibrate and propagate a layer together, each holding its own experts.
  // Not part of the result: any value gives the same checkpoint.
  int expert_shards = 1;

  nlohmann::json ToJson() const;
};


// Largest job spec the service accepts (a bounded message: DESIGN.md section 8).
inline constexpr size_t kMaxJobSpecBytes = 64 * 1024;

absl::StatusOr<QuantizeJobSpec> SpecFromJson(std::string_view text);

// The spec's typed choices as text, as qctl's flags take them.
struct SpecChoices {
  std::string method, grid, scope, objective, export_format, device, calib_inputs;
};
// `spec`'s choices by name (the flags' defaults).
SpecChoices ChoicesOf(const QuantizeJobSpec& spec);
// Each into `spec`, or one line naming the flag: "--method: 'awq' is not one of rtn, gptq, gsq".
absl::Status ApplyChoices(const SpecChoices& text, QuantizeJobSpec* spec);

// True when `text` holds a byte below 0x20 or DEL: NUL cuts a path short where the kernel reads
// it (a path that passed a check as one string names another at open), and newlines or escape
// sequences in ids forge lines in logs and terminals. Every path and id field is refused with one.
bool HasControlCharacter(std::string_view text);

// The spec's path fields as (JSON key, value), the empty ones included.
std::vector<std::pair<std::string, std::string>> SpecPaths(const QuantizeJobSpec& spec);

// The confinement check of the job's paths, made by the coordinator at submit and by a worker
// again before each task: every path the job reads or writes (not the evaluation text of a job
// that does not evaluate, nor qctl's local probe cache) must resolve inside one of `roots`
// (storage::ResolvesInside). PermissionDenied naming the field and the path, `what` after it
// ("is outside the coordinator's allowed roots"). OK when `roots` is empty.
absl::Status CheckSpecInsideRoots(const QuantizeJobSpec& spec,
                                  const std::vector<std::string>& roots, std::string_view what);

// Everything a worker needs to run the job's tasks: ToJson plus the output, the evaluation
// text and the execution options. SpecFromJson(ServiceJson(s).dump()) gives s back.
nlohmann::json ServiceJson(const QuantizeJobSpec& spec);

// Every check on the fields themselves (names, ranges, combinations); not the files they name
// or the machine (ValidateSpec adds those where the job runs). Messages name the fields by
// their qctl flags (`name_flags`) or their JSON keys.
absl::Status ValidateSpecFields(const QuantizeJobSpec& spec, bool name_flags);

}  // namespace quant::tasks
