#include "worker/tasks/service_tasks.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/file.h"
#include "common/status.h"
#include "worker/eval/eval_job.h"
#include "worker/quant/export.h"
#include "worker/quant/gsq.h"
#include "worker/tasks/layer_tasks.h"
#include "worker/tasks/plan_input.h"
#include "worker/tasks/task_state.h"

namespace quant::tasks {
namespace {

namespace fs = std::filesystem;

std::string Committed(const std::string& job_dir, const QuantizeJobSpec& spec, TaskKind kind,
                      int layer, int shard = 0, int shards = 1) {
  Task t;
  t.kind = kind;
  t.layer = layer;
  t.shard = shard;
  t.shards = shards;
  return TaskOutputPaths(job_dir, spec.out_dir, t, 0).committed;
}

// Layer `layer`'s inputs: the embeddings of the calibration windows for layer 0, else what
// layer - 1's propagate task committed.
absl::StatusOr<std::vector<at::Tensor>> LayerInputs(const JobState& job, const at::Tensor& windows,
                                                    const std::string& job_dir, int layer) {
  if (layer == 0) return EmbedWindows(job, windows);
  return LoadHidden(Committed(job_dir, job.spec, TaskKind::kPropagate, layer - 1) +
                        "/hidden.safetensors",
                    job.model->device());
}

// The names of job.units in the layer with this prefix.
std::vector<std::string> UnitNames(const JobState& job, const std::string& prefix) {
  std::vector<std::string> names;
  for (const auto& [name, q] : job.units) {
    if (name.starts_with(prefix)) names.push_back(name);
  }
  return names;
}

// The GSQ shards of `layer` in the plan (0 when the layer has no GSQ task).
int GsqShards(const Plan& plan, int layer) {
  for (const Task& t : plan.tasks) {
    if (t.kind == TaskKind::kGsq && t.layer == layer && !t.probe_pass) return t.shards;
  }
  return 0;
}

}  // namespace

absl::Status RunServiceTask(const QuantizeJobSpec& spec, const Task& task,
                            const std::string& job_dir, const std::string& attempt) {
  if (task.probe_pass || task.kind == TaskKind::kProbe || task.kind == TaskKind::kSolve) {
    return absl::UnimplementedError(
        "SLQ's probe pass runs in `qctl quantize` only; the service does not run it yet");
  }
  JobState job;
  at::Tensor windows;
  RETURN_IF_ERROR(OpenJob(spec, &job, &windows));
  const std::string prefix = absl::StrCat("model.layers.", task.layer, ".");
  switch (task.kind) {
    case TaskKind::kCalibrate: {
      ASSIGN_OR_RETURN(job.hidden, LayerInputs(job, windows, job_dir, task.layer));
      RETURN_IF_ERROR(RunCalibrateTask(job, task.layer));
      return SaveCalibration(attempt + "/calibration.safetensors", job);
    }
    case TaskKind::kQuantize: {
      RETURN_IF_ERROR(RestoreCalibration(
          job, task.layer,
          Committed(job_dir, spec, TaskKind::kCalibrate, task.layer) + "/calibration.safetensors"));
      RETURN_IF_ERROR(RunQuantizeTask(job));
      return SaveUnits(attempt, job, UnitNames(job, prefix), prefix);
    }
    case TaskKind::kGsq: {
      RETURN_IF_ERROR(RestoreCalibration(
          job, task.layer,
          Committed(job_dir, spec, TaskKind::kCalibrate, task.layer) + "/calibration.safetensors"));
      RETURN_IF_ERROR(LoadUnits(Committed(job_dir, spec, TaskKind::kQuantize, task.layer), job));
      RETURN_IF_ERROR(RunGsqTask(job, task.shard, task.shards));
      std::vector<std::string> names;
      for (const std::string& local : GsqShardNames(job.layer, task.shard, task.shards)) {
        names.push_back(prefix + local);
      }
      return SaveUnits(attempt, job, names, prefix);
    }
    case TaskKind::kPropagate: {
      ASSIGN_OR_RETURN(job.hidden, LayerInputs(job, windows, job_dir, task.layer));
      ASSIGN_OR_RETURN(Plan plan, PlanJob(spec));
      const std::string calibration =
          Committed(job_dir, spec, TaskKind::kCalibrate, task.layer) + "/calibration.safetensors";
      if (fs::exists(calibration)) {
        RETURN_IF_ERROR(RestoreCalibration(job, task.layer, calibration));
        RETURN_IF_ERROR(
            LoadUnits(Committed(job_dir, spec, TaskKind::kQuantize, task.layer), job));
        const int shards = GsqShards(plan, task.layer);
        for (int s = 0; s < shards; ++s) {
          RETURN_IF_ERROR(LoadUnits(
              Committed(job_dir, spec, TaskKind::kGsq, task.layer, s, shards), job));
        }
      }
      const std::vector<std::string> names = UnitNames(job, prefix);
      RETURN_IF_ERROR(RunPropagateTask(job, task.layer));
      RETURN_IF_ERROR(SaveUnits(attempt, job, names, prefix));
      return SaveHidden(attempt + "/hidden.safetensors", job.hidden);
    }
    case TaskKind::kWrite: {
      const int layers = job.model->config().num_layers;
      for (int l = 0; l < layers; ++l) {
        RETURN_IF_ERROR(LoadUnits(Committed(job_dir, spec, TaskKind::kPropagate, l), job));
      }
      ASSIGN_OR_RETURN(quant::ExportFormat format, quant::ParseExportFormat(spec.export_format));
      quant::ExportOptions export_options;
      export_options.format = format;
      export_options.out_dir = attempt;
      export_options.overwrite = true;  // a crashed attempt of this epoch may have left it
      export_options.job_options = spec.ToJson();
      ASSIGN_OR_RETURN(quant::ExportStats stats,
                       quant::ExportCheckpoint(job.model->checkpoint(), job.units, export_options));
      QuantizeJobResult result;
      result.fallback_experts = job.fallback_experts;
      result.bits_per_quantized_param_true = stats.bits_per_quantized_param_true;
      result.bits_per_quantized_param_stored = stats.bits_per_quantized_param_stored;
      result.bits_per_param_true = stats.bits_per_param_true;
      result.bits_per_param_stored = stats.bits_per_param_stored;
      result.container_note = stats.container_note;
      return WriteJsonFile(attempt + "/report.json",
                           JobReport(spec, result, job.reports, nlohmann::json()));
    }
    case TaskKind::kEvaluate: {
      ASSIGN_OR_RETURN(std::string text,
                       ReadWholeFile(spec.out_dir + "/report.json", "the write task's report"));
      nlohmann::json report = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
      if (report.is_discarded()) {
        return absl::DataLossError(spec.out_dir + "/report.json: not JSON");
      }
      eval::EvalJobOptions eo;
      eo.model_dir = spec.out_dir;
      eo.reference_dir = spec.model_dir;
      eo.text_path = spec.eval_text;
      eo.batch_windows = spec.batch_windows;
      eo.device = spec.device;
      ASSIGN_OR_RETURN(eval::EvalJobResult er, eval::RunEvalJob(eo, nullptr));
      report["eval"] = EvalJson(spec, er.summary);
      return WriteJsonFile(attempt, report);
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat("task ", task.Name(), ": unknown kind"));
  }
}

}  // namespace quant::tasks
