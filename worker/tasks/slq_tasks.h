// SLQ's task code (DESIGN.md section 6): units of a layer (tied groups), the probe task that
// scores every unit at every candidate bitwidth end to end, and the solve between the passes.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "worker/tasks/layer_tasks.h"

namespace quant::tasks {

// The SLQ units of one layer: tied linears share a key (DESIGN.md section 4): all routed experts
// of a projection, with gate and up together ("mlp.experts.gate_up", "mlp.experts.down"); any
// other gate/up pair ("mlp.shared_experts.gate_up"); DeepSeek's q_a_proj with
// kv_a_proj_with_mqa ("self_attn.qkv_a"); every other linear alone. With `per_expert`, each
// routed expert's gate and up, and its down, are units of their own ("mlp.experts.7.gate_up",
// "mlp.experts.7.down_proj"). Local names in, keys out.
std::map<std::string, std::vector<std::string>> SlqUnitsOfLayer(
    const std::vector<std::string>& local_names, bool per_expert = false);

// Prepares the probe pass: the probe windows' embeddings and the original model's final hidden
// states on them, and the probe cache (read when it exists).
absl::Status StartProbePass(JobState& job, const at::Tensor& calibration_windows);

// The probe pass's calibrate: skipped when the cache holds every probe.
absl::Status RunProbeCalibrateTask(JobState& job, int layer);

// Every unit of the current (calibrated) layer at every candidate bitwidth: the unit alone
// quantized by the job's quantizer start (RTN, or GPTQ with its H), the rest original, scored
// against the original on the probe windows (KL and 1 - EAR). Cached probes are not re-run.
absl::Status RunProbeTask(JobState& job);

// The original layer maps the calibration and the probe windows to the next layer's inputs.
absl::Status RunProbePropagateTask(JobState& job, int layer);

// The knapsack over the probe table: bits per unit (budget or EAR target), then the second
// pass starts from the calibration windows' embeddings again.
absl::Status RunSolveTask(JobState& job, const SlqSolveFn& solve);

// The chosen bits as a heat map (layers x unit types) drawn by gnuplot into `png`; a missing
// gnuplot is an error the caller may report and ignore.
absl::Status WriteSlqHeatmap(const nlohmann::json& solve_report, const std::string& png);

}  // namespace quant::tasks
