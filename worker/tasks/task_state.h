// The parts of a job's state that pass from one task to the next (DESIGN.md section 4), saved
// as safetensors files when the tasks run in different processes (quant-worker): the layer's
// inputs, its calibration (Hessian sums, the experts' routed tokens and targets), and quantized
// units with their reports. Tensors are saved bit for bit, so a task that restores them computes
// exactly what it would have in one process.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/eval/eval_job.h"
#include "worker/quant/export.h"
#include "worker/tasks/layer_tasks.h"
#include "worker/tasks/job_result.h"

namespace quant::tasks {

// Safetensors of CPU copies of `tensors` (float32, uint8, int32, int64), with JSON metadata.
absl::Status SaveTensors(const std::string& path,
                         const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                         const nlohmann::json& metadata = nlohmann::json::object());
// Every tensor of the file, on the CPU; `metadata` (optional) receives its JSON metadata.
absl::StatusOr<std::map<std::string, at::Tensor>> LoadTensors(const std::string& path,
                                                              nlohmann::json* metadata = nullptr);

// The job's model (on its device: its index, headers and config; layers load as tasks need
// them), scheme, scope and objective; the hidden states are left empty. Checks what
// RunQuantizeJob checks first. Reads no calibration text.
absl::Status OpenJob(const QuantizeJobSpec& spec, JobState* job);
// The calibration windows (int64 [N, T]) of job->spec's calibration source, tokenized with the
// model's tokenizer; sets job->windows. After OpenJob; made only by the tasks that forward the
// model over them (the first layer's), since tokenizing is the costly part of opening a job.
absl::Status MakeCalibrationWindows(JobState* job, at::Tensor* windows);
// Both of the above (RunQuantizeJob).
absl::Status OpenJob(const QuantizeJobSpec& spec, JobState* job, at::Tensor* windows);
// The windows' embeddings, one tensor per batch of spec.batch_windows: layer 0's inputs.
absl::StatusOr<std::vector<at::Tensor>> EmbedWindows(const JobState& job,
                                                     const at::Tensor& windows);

// Batches `ids` (global batch indices) of a layer's inputs.
absl::Status SaveHidden(const std::string& path, const std::vector<at::Tensor>& hidden,
                        const std::vector<int64_t>& ids);
// Batches `ids` from the hidden*.safetensors files of `dir` (one per gang member, or one).
absl::StatusOr<std::vector<at::Tensor>> LoadHidden(const std::string& dir,
                                                   const std::vector<int64_t>& ids,
                                                   at::Device device);
// The calibration windows a propagate task's hand-off in `dir` holds (every member's batches),
// from the files' headers alone.
absl::StatusOr<int64_t> HiddenWindows(const std::string& dir);

// The current layer's calibration (job.layer.capture): the statistics whose key `keep` accepts
// (null: all), the captured experts' tokens and the job's window count.
absl::Status SaveCalibration(const std::string& path, const JobState& job,
                             const std::function<bool(const std::string& key)>& keep = nullptr);
// Loads layer `layer` (LoadLayerState) and restores its calibration from the
// calibration*.safetensors files of `dir` (one per gang member, or one); also fills hessian_of
// for every in-scope linear, as the quantize task does, and job.windows (left as it was when the
// files predate the count).
absl::Status RestoreCalibration(JobState& job, int layer, const std::string& dir);

// Units named in `names` (full tensor names) with their reports, and the job's fallback experts
// of the layer (names starting with `layer_prefix`): `dir`/units<suffix>.safetensors and
// `dir`/units<suffix>.json (suffix "-r1": a gang member's part).
// Without `with_tensors` only units<suffix>.json (the reports: propagate's proxy losses).
absl::Status SaveUnits(const std::string& dir, const JobState& job,
                       const std::vector<std::string>& names, const std::string& layer_prefix,
                       const std::string& suffix = "", bool with_tensors = true);
// Adds the units saved in `dir` (every part) to job.units (replacing same names), their
// reports to job.reports (replacing reports of the same unit) and the fallback experts.
absl::Status LoadUnits(const std::string& dir, JobState& job);
// The reports (and fallback experts) saved in `dir` (every units*.json part), replacing the
// reports of the same units.
absl::Status LoadUnitReports(const std::string& dir, JobState& job);

nlohmann::json UnitReportJson(const UnitReport& r);

// The export's bits per parameter and container note into the job's result.
void SetExportStats(const quant::ExportStats& stats, QuantizeJobResult* result);
// report.json of a job (RunQuantizeJob's and the service's write and evaluate tasks').
nlohmann::json JobReport(const QuantizeJobSpec& spec, const QuantizeJobResult& result,
                         const std::vector<UnitReport>& reports, const nlohmann::json& slq);
// The evaluation of the checkpoint written to `quantized_dir` (the out directory, or its local
// staging when the output goes to object storage) against the original, as the options say.
eval::EvalJobOptions EvalOptionsFor(const QuantizeJobSpec& spec, const std::string& quantized_dir);
// The "eval_windows" object of report.json: per window, so two runs can be compared paired.
nlohmann::json EvalWindowsJson(const std::vector<eval::WindowStats>& windows);
// The "eval" object of report.json.
nlohmann::json EvalJson(const QuantizeJobSpec& spec, const eval::EvalSummary& summary);
// Writes `j` to `path` through a temporary file and a rename.
absl::Status WriteJsonFile(const std::string& path, const nlohmann::json& j);

}  // namespace quant::tasks
