// SLQ's job-level work that needs no tensors (DESIGN.md sections 4 and 6): the units of a job
// (tied linears, from the checkpoint's metadata) and the global solve over the probe tables.
// Torch-free, so that the coordinator can run the solve itself once every probe is in.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "job/job_spec.h"
#include "job/slq_files.h"
#include "job/slq_tables.h"
#include "nlohmann/json.hpp"
#include "storage/checkpoint.h"

namespace quant::tasks {

// The SLQ units of one layer: tied linears share a key (DESIGN.md section 4): all routed experts
// of a projection, with gate and up together ("mlp.experts.gate_up", "mlp.experts.down"); any
// other gate/up pair ("mlp.shared_experts.gate_up"); DeepSeek's q_a_proj with
// kv_a_proj_with_mqa ("self_attn.qkv_a"); every other linear alone. With `per_expert`, each
// routed expert's gate and up, and its down, are units of their own ("mlp.experts.7.gate_up",
// "mlp.experts.7.down_proj"). Local names in, keys out.
std::map<std::string, std::vector<std::string>> SlqUnitsOfLayer(
    const std::vector<std::string>& local_names, bool per_expert = false);

// A job's SLQ units (full keys, "model.layers.3.mlp.experts.gate_up").
struct SlqUnits {
  std::map<std::string, int64_t> params;                    // unit -> weights
  std::map<std::string, std::vector<std::string>> members;  // unit -> full tensor names
  // --per-expert-bits: the tied expert units (one per layer and projection), probed only to
  // calibrate how their experts add up in the solve (slq_expert_model.h); never solved.
  std::vector<std::string> calibration_units;
};
// The in-scope 2-D linears of `checkpoint`'s layers grouped into units, from its metadata alone.
absl::StatusOr<SlqUnits> SlqUnitsOf(const storage::Checkpoint& checkpoint,
                                    const QuantizeJobSpec& spec);

struct SlqSolveResult {
  std::map<std::string, int> unit_bits;  // full tensor name -> bits
  nlohmann::json report;                 // report.json's "slq" object
  double seconds = 0;                    // the solve's own time
};
// The global solve (the budget, the EAR target, or spec.slq_allocation's file checked against
// the units) over `probes`, which must hold every unit at every candidate bitwidth the job
// offers. `probes_run` and `probes_cached` are reported.
absl::StatusOr<SlqSolveResult> SolveSlq(const QuantizeJobSpec& spec, const SlqUnits& units,
                                        const ProbeTable& probes, int64_t probes_run,
                                        int64_t probes_cached, const SlqSolveFn& solve);

// The hand-off files of SLQ's tasks (the scratch's probes.json and allocation.json): a probe
// task's table (the units of `layer_prefix`, "model.layers.3.", with the count it ran) and its
// inverse, merged into `probes` (returns the count); the solve's allocation (bits per full
// tensor name and the report) and its inverse. `label` names the file in errors.
nlohmann::json ProbeTableJson(const ProbeTable& probes, const std::string& layer_prefix,
                              int64_t probes_run);
absl::StatusOr<int64_t> MergeProbeTableJson(const nlohmann::json& j, const std::string& label,
                                            ProbeTable* probes);
nlohmann::json SlqAllocationJson(const std::map<std::string, int>& unit_bits,
                                 const nlohmann::json& report);
absl::Status ParseSlqAllocationJson(const nlohmann::json& j, const std::string& label,
                                    std::map<std::string, int>* unit_bits,
                                    nlohmann::json* report);

// What SLQ's probe scores depend on, as a key (hex): the model's location and files
// (`model_files`: storage::DescribeFiles of its store) and the probe quantizer's options. The
// name of qctl's probe cache file and the coordinator's probe cache key.
std::string ProbeCacheKey(const QuantizeJobSpec& spec, const std::string& model_files);
// Whether `table` scores every unit of the layer (`layer_prefix`, "model.layers.3.") at every
// bitwidth of `bits` (a cached table can skip that layer's probe task).
bool CoversLayer(const ProbeTable& table, const SlqUnits& units, const std::string& layer_prefix,
                 const std::vector<int>& bits);

}  // namespace quant::tasks
