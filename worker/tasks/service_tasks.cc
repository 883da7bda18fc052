#include "worker/tasks/service_tasks.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/file.h"
#include "common/status.h"
#include "common/metrics.h"
#include "storage/object_store.h"
#include "worker/eval/eval_job.h"
#include "worker/exchange/expert_parallel.h"
#include "worker/quant/export.h"
#include "worker/quant/gsq.h"
#include "worker/tasks/layer_tasks.h"
#include "job/plan_input.h"
#include "worker/tasks/task_state.h"

namespace quant::tasks {
namespace {

namespace fs = std::filesystem;

// The committed outputs of the lease's inputs of `kind` at `layer`, in plan order (GSQ: every
// shard).
std::vector<std::string> InputsOf(const LeasedTask& leased, TaskKind kind, int layer) {
  std::vector<std::string> dirs;
  for (const TaskInput& in : leased.inputs) {
    if (in.task.kind == kind && in.task.layer == layer) dirs.push_back(in.committed);
  }
  return dirs;
}

// The one input of `kind` at `layer`; FailedPrecondition naming it when the lease has none.
absl::StatusOr<std::string> InputOf(const LeasedTask& leased, TaskKind kind, int layer) {
  std::vector<std::string> dirs = InputsOf(leased, kind, layer);
  if (dirs.size() != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        leased.task.Name(), ": the lease names ", dirs.size(), " inputs of ",
        layer >= 0 ? absl::StrCat("L", layer, "/") : "", TaskKindName(kind), ", not one"));
  }
  return dirs[0];
}

// The batches of the calibration windows, and which of them this member forwards.
std::vector<int64_t> OwnBatches(const JobState& job) {
  const int64_t batches = (job.windows + job.spec.batch_windows - 1) / job.spec.batch_windows;
  std::vector<int64_t> ids;
  for (int64_t b = job.gang.rank; b < batches; b += job.gang.size) ids.push_back(b);
  return ids;
}

// The layer's inputs (this member's batches): for layer 0 the embeddings of the calibration
// windows, made here (the only tasks that tokenize the calibration text: they forward the model
// over it), else what layer - 1's propagate task committed (and the window count its files
// hold). Sets job.windows and the gang's batch count.
absl::StatusOr<std::vector<at::Tensor>> LayerInputs(JobState& job, const LeasedTask& leased) {
  const int layer = leased.task.layer;
  at::Tensor windows;
  std::string previous;
  if (layer == 0) {
    RETURN_IF_ERROR(MakeCalibrationWindows(&job, &windows));
  } else {
    ASSIGN_OR_RETURN(previous, InputOf(leased, TaskKind::kPropagate, layer - 1));
    ASSIGN_OR_RETURN(job.windows, HiddenWindows(previous));
  }
  job.gang.batches = (job.windows + job.spec.batch_windows - 1) / job.spec.batch_windows;
  const std::vector<int64_t> ids = OwnBatches(job);
  if (layer == 0) {
    ASSIGN_OR_RETURN(std::vector<at::Tensor> all, EmbedWindows(job, windows));
    std::vector<at::Tensor> own;
    for (int64_t id : ids) own.push_back(all[id]);
    return own;
  }
  return LoadHidden(previous, ids, job.model->device());
}

// A full tensor name's routed expert ("model.layers.3.mlp.experts.5.up_proj" -> 5), or -1.
int ExpertOf(const std::string& name) {
  const size_t pos = name.find(".mlp.experts.");
  if (pos == std::string::npos) return -1;
  return std::atoi(name.c_str() + pos + std::string(".mlp.experts.").size());
}

void CountExchange(const exchange::Exchange& ex, const exchange::ExpertParallelRunner& runner,
                   int resident) {
  auto& m = metrics::Default();
  m.GetCounter("quant_exchange_bytes_total", "Bytes moved by the expert exchange.",
               {{"direction", "sent"}})
      .Inc(static_cast<double>(ex.bytes_sent()));
  m.GetCounter("quant_exchange_bytes_total", "Bytes moved by the expert exchange.",
               {{"direction", "received"}})
      .Inc(static_cast<double>(ex.bytes_received()));
  for (const auto& [expert, rows] : runner.tokens_served()) {
    m.GetCounter("quant_expert_tokens_total", "Routed tokens run by this worker's experts.",
                 {{"expert", std::to_string(expert)}})
        .Inc(static_cast<double>(rows));
  }
  m.GetGauge("quant_resident_experts", "Routed experts of the current layer held here.")
      .Set(resident);
}

// The names of job.units in the layer with this prefix.
std::vector<std::string> UnitNames(const JobState& job, const std::string& prefix) {
  std::vector<std::string> names;
  for (const auto& [name, q] : job.units) {
    if (name.starts_with(prefix)) names.push_back(name);
  }
  return names;
}

// The publish task: the committed checkpoint and report, uploaded to the s3:// output. Idempotent
// (a re-run uploads the same files again); the manifest goes last.
absl::Status Publish(const QuantizeJobSpec& spec, const std::string& written,
                     const std::string& attempt) {
  ASSIGN_OR_RETURN(const uint64_t bytes,
                   storage::PublishDirectory(written, spec.out_dir, quant::kManifestFile,
                                             spec.overwrite));
  metrics::Default()
      .GetCounter("quant_object_bytes_uploaded_total",
                  "Bytes uploaded to object storage (published checkpoints).")
      .Inc(static_cast<double>(bytes));
  return WriteJsonFile(attempt, {{"location", spec.out_dir}, {"bytes", bytes}});
}

// The evaluate task: the checkpoint the write task committed (`written`) against the original,
// added to its report. Opens neither the job's model nor its calibration text (the evaluation
// opens both models and reads the evaluation text itself).
absl::Status Evaluate(const QuantizeJobSpec& spec, const std::string& written,
                      const std::string& attempt, const TaskHooks& hooks) {
  ASSIGN_OR_RETURN(std::string text,
                   ReadWholeFile(written + "/report.json", "the write task's report"));
  nlohmann::json report = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (report.is_discarded()) return absl::DataLossError(written + "/report.json: not JSON");
  eval::EvalJobOptions options = EvalOptionsFor(spec, written);
  options.should_stop = hooks.should_stop;
  ASSIGN_OR_RETURN(eval::EvalJobResult er, eval::RunEvalJob(options, nullptr));
  report["eval"] = EvalJson(spec, er.summary);
  return WriteJsonFile(attempt, report);
}

}  // namespace

absl::Status RunServiceTask(const QuantizeJobSpec& spec, const LeasedTask& leased,
                            exchange::Exchange* exchange, TaskHooks hooks) {
  const Task& task = leased.task;
  const std::string& attempt = leased.output.attempt;
  if (task.probe_pass || task.kind == TaskKind::kProbe || task.kind == TaskKind::kSolve) {
    return absl::UnimplementedError(
        "SLQ's probe pass runs in `qctl quantize` only; the service does not run it yet");
  }
  // Publish opens nothing but the output, evaluate nothing of the job's own.
  if (task.kind == TaskKind::kPublish || task.kind == TaskKind::kEvaluate) {
    ASSIGN_OR_RETURN(const std::string written, InputOf(leased, TaskKind::kWrite, -1));
    return task.kind == TaskKind::kPublish ? Publish(spec, written, attempt)
                                           : Evaluate(spec, written, attempt, hooks);
  }
  // The model (its headers and config; layers load as the task needs them); the calibration
  // windows only where the task forwards the model over them (LayerInputs of layer 0).
  JobState job;
  RETURN_IF_ERROR(OpenJob(spec, &job));
  job.hooks = std::move(hooks);
  // The checkpoint's bytes this task read, counted however it ends.
  struct CountReads {
    const JobState& job;
    ~CountReads() {
      metrics::Default()
          .GetCounter("quant_checkpoint_bytes_read_total", "Source checkpoint bytes read.")
          .Inc(static_cast<double>(job.model->checkpoint().bytes_read()));
    }
  } count_reads{job};
  const std::string prefix = absl::StrCat("model.layers.", task.layer, ".");
  // A gang member holds its own experts and reaches the others' through the exchange.
  std::unique_ptr<exchange::ExpertParallelRunner> runner;
  std::string part;  // this member's file suffix
  int first = 0, last = 0;
  if (task.gang > 1) {
    if (exchange == nullptr || exchange->size() != task.gang) {
      return absl::FailedPreconditionError(
          absl::StrCat(task.Name(), ": needs a gang of ", task.gang, " connected"));
    }
    const int experts = job.model->config().num_experts;
    runner = std::make_unique<exchange::ExpertParallelRunner>(exchange, experts);
    std::tie(first, last) = exchange::OwnedExperts(exchange->rank(), exchange->size(), experts);
    job.model->SetExpertParallel(first, last, runner.get());
    job.gang.rank = exchange->rank();
    job.gang.size = exchange->size();
    exchange::ExpertParallelRunner* r = runner.get();
    model::Model* m = job.model.get();
    job.gang.idle = [r, m](const model::LayerWeights& w, model::ForwardObserver* obs) {
      return r->Idle(*m, w, obs);
    };
    job.gang.status = [r] { return r->status(); };
    part = absl::StrCat("-r", exchange->rank());
  }
  auto resident = [&](const std::string& name) {
    const int e = ExpertOf(name);
    return runner == nullptr || (e >= first && e < last);
  };
  switch (task.kind) {
    case TaskKind::kCalibrate: {
      ASSIGN_OR_RETURN(job.hidden, LayerInputs(job, leased));
      RETURN_IF_ERROR(RunCalibrateTask(job, task.layer));
      if (runner != nullptr) CountExchange(*exchange, *runner, last - first);
      // A member's statistics of anything but its own experts cover its batches only.
      return SaveCalibration(attempt + "/calibration" + part + ".safetensors", job,
                             [&](const std::string& key) {
                               return runner == nullptr || (ExpertOf(key) >= 0 && resident(key));
                             });
    }
    case TaskKind::kQuantize: {
      ASSIGN_OR_RETURN(const std::string calibration,
                       InputOf(leased, TaskKind::kCalibrate, task.layer));
      RETURN_IF_ERROR(RestoreCalibration(job, task.layer, calibration));
      RETURN_IF_ERROR(RunQuantizeTask(job));
      return SaveUnits(attempt, job, UnitNames(job, prefix), prefix);
    }
    case TaskKind::kGsq: {
      // Everything from the calibrate/quantize hand-off: the calibration text is not read.
      ASSIGN_OR_RETURN(const std::string calibration,
                       InputOf(leased, TaskKind::kCalibrate, task.layer));
      ASSIGN_OR_RETURN(const std::string quantized,
                       InputOf(leased, TaskKind::kQuantize, task.layer));
      RETURN_IF_ERROR(RestoreCalibration(job, task.layer, calibration));
      if (job.windows == 0) {
        // A hand-off saved before calibrations recorded their window count (a resumed
        // `qctl quantize` work directory of an older build): count them again.
        at::Tensor windows;
        RETURN_IF_ERROR(MakeCalibrationWindows(&job, &windows));
      }
      RETURN_IF_ERROR(LoadUnits(quantized, job));
      RETURN_IF_ERROR(RunGsqTask(job, task.shard, task.shards));
      std::vector<std::string> names;
      for (const std::string& local : GsqShardNames(job.layer, task.shard, task.shards)) {
        names.push_back(prefix + local);
      }
      return SaveUnits(attempt, job, names, prefix);
    }
    case TaskKind::kPropagate: {
      ASSIGN_OR_RETURN(job.hidden, LayerInputs(job, leased));
      const std::vector<std::string> calibration =
          InputsOf(leased, TaskKind::kCalibrate, task.layer);
      if (!calibration.empty()) {  // the layer has units: propagate the quantized layer
        RETURN_IF_ERROR(RestoreCalibration(job, task.layer, calibration[0]));
        ASSIGN_OR_RETURN(const std::string quantized,
                         InputOf(leased, TaskKind::kQuantize, task.layer));
        RETURN_IF_ERROR(LoadUnits(quantized, job));
        for (const std::string& shard : InputsOf(leased, TaskKind::kGsq, task.layer)) {
          RETURN_IF_ERROR(LoadUnits(shard, job));
        }
        // A gang member keeps (and propagates with) its own experts only.
        std::erase_if(job.units, [&](const auto& u) { return !resident(u.first); });
        std::erase_if(job.reports, [&](const UnitReport& r) { return !resident(r.name); });
      }
      const std::vector<std::string> names = UnitNames(job, prefix);
      RETURN_IF_ERROR(RunPropagateTask(job, task.layer));
      if (runner != nullptr) CountExchange(*exchange, *runner, last - first);
      RETURN_IF_ERROR(SaveUnits(attempt, job, names, prefix, part));
      return SaveHidden(attempt + "/hidden" + part + ".safetensors", job.hidden, OwnBatches(job));
    }
    case TaskKind::kWrite: {
      const int layers = job.model->config().num_layers;
      for (int l = 0; l < layers; ++l) {
        ASSIGN_OR_RETURN(const std::string propagated, InputOf(leased, TaskKind::kPropagate, l));
        RETURN_IF_ERROR(LoadUnits(propagated, job));
      }
      const quant::ExportFormat format = spec.export_format;
      quant::ExportOptions export_options;
      export_options.format = format;
      export_options.out_dir = attempt;
      export_options.overwrite = true;  // a crashed attempt of this epoch may have left it
      export_options.job_options = spec.ToJson();
      export_options.should_stop = job.hooks.should_stop;
      ASSIGN_OR_RETURN(quant::ExportStats stats,
                       quant::ExportCheckpoint(job.model->checkpoint(), job.units, export_options));
      metrics::Default()
          .GetCounter("quant_checkpoint_bytes_written_total", "Quantized checkpoint bytes written.")
          .Inc(static_cast<double>(stats.bytes_written));
      QuantizeJobResult result;
      result.fallback_experts = job.fallback_experts;
      SetExportStats(stats, &result);
      return WriteJsonFile(attempt + "/report.json",
                           JobReport(spec, result, job.reports, nlohmann::json()));
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat("task ", task.Name(), ": unknown kind"));
  }
}

}  // namespace quant::tasks
