// SLQ's task code (DESIGN.md section 6): units of a layer (tied groups), the probe task that
// scores every unit at every candidate bitwidth end to end, and the solve between the passes.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "job/slq_job.h"
#include "worker/tasks/layer_tasks.h"

namespace quant::tasks {


// Prepares the probe pass: the probe windows' embeddings and the original model's final hidden
// states on them, and the probe cache (read when it exists). Both of the below, and a copy of
// job.hidden (the calibration windows' embeddings) for the second pass.
absl::Status StartProbePass(JobState& job, const at::Tensor& calibration_windows);
// The SLQ units of the job and their sizes (job.unit_params, unit_members, calibration_units)
// from the checkpoint's metadata (no weight read); with `use_cache`, the probe cache is read
// into job.probes, and job.probes_complete says whether it holds every probe.
absl::Status PrepareProbeUnits(JobState& job, bool use_cache);
// The probe windows (the first spec.probe_windows calibration windows), their embeddings
// (job.probe_hidden) and the original model's final-normed hidden states on them
// (job.probe_reference).
absl::Status MakeProbeInputs(JobState& job, const at::Tensor& calibration_windows);

// The probes of the units of `layer_prefix` ("model.layers.3."), with the count run, as JSON
// (a probe task's hand-off); and the inverse, merged into job.probes and job.probes_run.
nlohmann::json LayerProbesJson(const JobState& job, const std::string& layer_prefix,
                               int64_t probes_run);
absl::Status MergeLayerProbes(const nlohmann::json& j, const std::string& label, JobState& job);
// The solve's outcome (job.unit_bits and job.solve_report) as JSON, and back.
nlohmann::json AllocationJson(const JobState& job);
absl::Status RestoreAllocation(const nlohmann::json& j, const std::string& label, JobState& job);

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
