#include "worker/runner/task_runner.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "common/file.h"
#include "common/metrics.h"
#include "common/status.h"
#include "job/slq_solver.h"
#include "storage/object_store.h"
#include "worker/exchange/expert_parallel.h"
#include "worker/tasks/slq_tasks.h"
#include "worker/tasks/task_state.h"

namespace quant::tasks {
namespace {

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

}  // namespace

std::string PhaseOf(const Task& task, const QuantizeJobSpec& spec) {
  switch (task.kind) {
    case TaskKind::kCalibrate: return task.probe_pass ? "probe" : "calibrate";
    case TaskKind::kProbe: return "probe";
    case TaskKind::kSolve: return "solve";
    case TaskKind::kQuantize: return spec.method == Method::kRtn ? "rtn" : "gptq";
    case TaskKind::kGsq: return "gsq";
    case TaskKind::kPropagate: return task.probe_pass ? "probe" : "propagate";
    case TaskKind::kWrite: return "write";
    case TaskKind::kEvaluate: return "eval";
    case TaskKind::kPublish: return "publish";
  }
  return "other";
}

TaskRunner::TaskRunner(QuantizeJobSpec spec, TaskHooks hooks, SlqSolveFn solve)
    : spec_(std::move(spec)), solve_(solve ? std::move(solve) : SlqSolveFn(slq::SolveTables)) {
  job_.spec = spec_;
  job_.hooks = std::move(hooks);
}

TaskRunner::~TaskRunner() = default;

absl::Status TaskRunner::Open() {
  if (open_) return absl::OkStatus();
  TaskHooks hooks = std::move(job_.hooks);
  RETURN_IF_ERROR(OpenJob(spec_, &job_));
  job_.hooks = std::move(hooks);
  open_ = true;
  return absl::OkStatus();
}

absl::StatusOr<TaskOutcome> TaskRunner::Run(const Task& task, TaskIO& io,
                                            exchange::Exchange* exchange) {
  switch (task.kind) {
    case TaskKind::kWrite:
      return Write(task, io);
    case TaskKind::kEvaluate:
      return Evaluate(task, io);
    case TaskKind::kPublish:
      return Publish(task, io);
    default:
      RETURN_IF_ERROR(RunLayerTask(task, io, exchange));
      return TaskOutcome{};
  }
}

absl::Status TaskRunner::RunLayerTask(const Task& task, TaskIO& io, exchange::Exchange* exchange) {
  RETURN_IF_ERROR(Open());
  // The checkpoint's bytes this task read, counted however it ends.
  struct CountReads {
    const model::Model& model;
    const uint64_t before = model.checkpoint().bytes_read();
    ~CountReads() {
      metrics::Default()
          .GetCounter("quant_checkpoint_bytes_read_total", "Source checkpoint bytes read.")
          .Inc(static_cast<double>(model.checkpoint().bytes_read() - before));
    }
  } count_reads{*job_.model};
  JobState& job = job_;
  const std::string prefix = absl::StrCat("model.layers.", task.layer, ".");
  // A gang member holds its own experts and reaches the others' through the exchange.
  std::unique_ptr<exchange::ExpertParallelRunner> runner;
  int first = 0, last = 0;
  if (task.gang > 1 && exchange != nullptr) {
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
  }
  auto resident = [&](const std::string& name) {
    const int e = ExpertOf(name);
    return runner == nullptr || (e >= first && e < last);
  };
  if (spec_.slq) RETURN_IF_ERROR(io.LoadSlqState(task, job));
  switch (task.kind) {
    case TaskKind::kCalibrate: {
      RETURN_IF_ERROR(io.LoadLayerInputs(task, job));
      if (task.probe_pass) {  // Hessians only, for the probes' quantizer start
        RETURN_IF_ERROR(RunProbeCalibrateTask(job, task.layer));
        return io.SaveCalibration(task, job, nullptr);
      }
      RETURN_IF_ERROR(RunCalibrateTask(job, task.layer));
      if (runner != nullptr) CountExchange(*exchange, *runner, last - first);
      // A member's statistics of anything but its own experts cover its batches only.
      return io.SaveCalibration(task, job, [&](const std::string& key) {
        return runner == nullptr || (ExpertOf(key) >= 0 && resident(key));
      });
    }
    case TaskKind::kProbe:
      if (job.probes_complete) return absl::OkStatus();  // the probe cache holds every probe
      RETURN_IF_ERROR(io.LoadCalibration(task, job));
      RETURN_IF_ERROR(RunProbeTask(job));
      return io.SaveSlqState(task, job);
    case TaskKind::kSolve:
      RETURN_IF_ERROR(RunSolveTask(job, solve_));
      return io.SaveSlqState(task, job);
    case TaskKind::kQuantize:
      RETURN_IF_ERROR(io.LoadCalibration(task, job));
      RETURN_IF_ERROR(RunQuantizeTask(job));
      return io.SaveUnits(task, job, UnitNames(job, prefix));
    case TaskKind::kGsq: {
      // Everything from the calibrate/quantize hand-off: the calibration text is not read.
      RETURN_IF_ERROR(io.LoadCalibration(task, job));
      RETURN_IF_ERROR(io.LoadUnits(task, TaskKind::kQuantize, job));
      RETURN_IF_ERROR(RunGsqTask(job, task.shard, task.shards));
      std::vector<std::string> names;
      for (const std::string& local : GsqShardNames(job.layer, task.shard, task.shards)) {
        names.push_back(prefix + local);
      }
      return io.SaveUnits(task, job, names);
    }
    case TaskKind::kPropagate: {
      RETURN_IF_ERROR(io.LoadLayerInputs(task, job));
      if (task.probe_pass) {  // the original layer, over the calibration and the probe windows
        RETURN_IF_ERROR(RunProbePropagateTask(job, task.layer));
        RETURN_IF_ERROR(io.SaveLayerOutputs(task, job));
        return io.SaveSlqState(task, job);
      }
      if (io.HasCalibration(task)) {  // the layer has units: propagate the quantized layer
        RETURN_IF_ERROR(io.LoadCalibration(task, job));
        RETURN_IF_ERROR(io.LoadUnits(task, TaskKind::kQuantize, job));
        RETURN_IF_ERROR(io.LoadUnits(task, TaskKind::kGsq, job));
        // A gang member keeps (and propagates with) its own experts only.
        std::erase_if(job.units, [&](const auto& u) { return !resident(u.first); });
        std::erase_if(job.reports, [&](const UnitReport& r) { return !resident(r.name); });
      }
      const std::vector<std::string> names = UnitNames(job, prefix);
      RETURN_IF_ERROR(RunPropagateTask(job, task.layer));
      if (runner != nullptr) CountExchange(*exchange, *runner, last - first);
      RETURN_IF_ERROR(io.SaveUnitReports(task, job, names));
      return io.SaveLayerOutputs(task, job);
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat("task ", task.Name(), ": unknown kind"));
  }
}

// The checkpoint of every layer's units, and report.json beside it (with the SLQ heat map).
absl::StatusOr<TaskOutcome> TaskRunner::Write(const Task& task, TaskIO& io) {
  RETURN_IF_ERROR(Open());
  job_.hidden.clear();  // the layers are done: their activations can go before the export
  if (spec_.slq) RETURN_IF_ERROR(io.LoadSlqState(task, job_));  // the solve's report
  RETURN_IF_ERROR(io.LoadUnits(task, TaskKind::kWrite, job_));
  const TaskIO::WriteTarget target = io.WriteTargetOf(task);
  quant::ExportOptions export_options;
  export_options.format = spec_.export_format;
  export_options.out_dir = target.dir;
  export_options.overwrite = target.overwrite;
  export_options.job_options = spec_.ToJson();
  export_options.should_stop = job_.hooks.should_stop;
  ASSIGN_OR_RETURN(quant::ExportStats stats,
                   quant::ExportCheckpoint(job_.model->checkpoint(), job_.units, export_options));
  metrics::Default()
      .GetCounter("quant_checkpoint_bytes_written_total", "Quantized checkpoint bytes written.")
      .Inc(static_cast<double>(stats.bytes_written));
  if (spec_.slq) {
    // The chosen bits as a heat map beside the report (best effort: a note if gnuplot fails).
    absl::Status drawn = WriteSlqHeatmap(job_.solve_report, target.dir + "/slq_bits.png");
    job_.solve_report["heatmap"] =
        drawn.ok() ? spec_.out_dir + "/slq_bits.png" : std::string(drawn.message());
  }
  QuantizeJobResult result;
  if (io.Timings() != nullptr) result = *io.Timings();
  result.fallback_experts = job_.fallback_experts;
  SetExportStats(stats, &result);
  RETURN_IF_ERROR(WriteJsonFile(target.dir + "/report.json",
                                JobReport(spec_, result, job_.reports, job_.solve_report)));
  TaskOutcome outcome;
  outcome.written = std::move(stats);
  return outcome;
}

// The written checkpoint against the original, added to its report. Opens neither the job's
// model nor its calibration text (the evaluation opens both models and reads its text itself).
absl::StatusOr<TaskOutcome> TaskRunner::Evaluate(const Task& task, TaskIO& io) {
  ASSIGN_OR_RETURN(const std::string written, io.WrittenDir(task));
  ASSIGN_OR_RETURN(std::string text,
                   ReadWholeFile(written + "/report.json", "the write task's report"));
  nlohmann::json report = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (report.is_discarded()) return absl::DataLossError(written + "/report.json: not JSON");
  eval::EvalJobOptions options = EvalOptionsFor(spec_, written);
  options.should_stop = job_.hooks.should_stop;
  ASSIGN_OR_RETURN(eval::EvalJobResult er,
                   eval::RunEvalJob(options, job_.hooks.on_eval_progress));
  report["eval"] = EvalJson(spec_, er.summary);
  report["eval_windows"] = EvalWindowsJson(er.window_stats);
  if (io.Timings() != nullptr) {  // the tasks finished since the write (the write itself)
    const nlohmann::json timings = JobReport(spec_, *io.Timings(), {}, nlohmann::json());
    report["tasks"] = timings["tasks"];
    report["phases"] = timings["phases"];
  }
  RETURN_IF_ERROR(WriteJsonFile(io.EvalReportPath(task), report));
  TaskOutcome outcome;
  outcome.evaluated = std::move(er);
  return outcome;
}

// The written checkpoint and report uploaded to the s3:// output. Idempotent (a re-run uploads
// the same files again); the manifest goes last.
absl::StatusOr<TaskOutcome> TaskRunner::Publish(const Task& task, TaskIO& io) {
  ASSIGN_OR_RETURN(const std::string written, io.WrittenDir(task));
  ASSIGN_OR_RETURN(const uint64_t bytes,
                   storage::PublishDirectory(written, spec_.out_dir, quant::kManifestFile,
                                             spec_.overwrite));
  metrics::Default()
      .GetCounter("quant_object_bytes_uploaded_total",
                  "Bytes uploaded to object storage (published checkpoints).")
      .Inc(static_cast<double>(bytes));
  const std::string record = io.PublishRecordPath(task);
  if (!record.empty()) {
    RETURN_IF_ERROR(WriteJsonFile(record, {{"location", spec_.out_dir}, {"bytes", bytes}}));
  }
  TaskOutcome outcome;
  outcome.uploaded_bytes = static_cast<int64_t>(bytes);
  return outcome;
}

}  // namespace quant::tasks
