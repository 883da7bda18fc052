// RunQuantizeJob: calibration windows, then per layer calibrate (Hessians, expert tokens and
// full-precision targets with the original layer), quantize (RTN, GPTQ, GSQ), propagate (the
// quantized layer makes the next layer's inputs); then export and evaluate the written files.
#include "worker/tasks/quantize_job.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file.h"
#include "common/status.h"
#include "worker/eval/eval_job.h"
#include "worker/eval/eval_pipeline.h"
#include "worker/model/calibration.h"
#include "worker/model/model.h"
#include "worker/quant/export.h"
#include "worker/quant/gptq.h"
#include "worker/quant/gsq.h"
#include "worker/quant/quantizer.h"
#include "worker/quant/scope.h"
#include "worker/tasks/job_spec.h"
#include "worker/tasks/layer_tasks.h"
#include "worker/tasks/plan.h"
#include "worker/tasks/slq_tasks.h"
#include "worker/tokenizer/tokenizer.h"

namespace quant::tasks {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Resets the kernel's resident high-water mark so each phase reports its own peak.
void ResetPeakRss() {
  std::ofstream clear("/proc/self/clear_refs");
  if (clear) clear << "5";
}

}  // namespace

absl::Status ValidateSpec(const QuantizeJobSpec& s) {
  RETURN_IF_ERROR(ValidateSpecFields(s, /*name_flags=*/true));
  if (s.device == "cuda" && !quant::GsqCudaAvailable()) {
    return absl::FailedPreconditionError(
        "--device cuda: no CUDA device here, or this build or its libtorch has no CUDA");
  }
  if (s.slq && !s.slq_allocation.empty()) {
    // Checked in full against the units at the solve; the file's form is checked up front.
    ASSIGN_OR_RETURN(std::string text, ReadWholeFile(s.slq_allocation, "SLQ allocation"));
    if (!nlohmann::json::accept(text)) {
      return absl::InvalidArgumentError(
          absl::StrCat(s.slq_allocation, ": not a JSON object of unit: bits"));
    }
  }
  if (s.out_dir.empty()) return absl::InvalidArgumentError("--out is required");
  if (fs::exists(s.out_dir) && !s.overwrite) {
    return absl::AlreadyExistsError(
        absl::StrCat(s.out_dir, ": output directory already exists (pass --overwrite)"));
  }
  if (fs::weakly_canonical(s.out_dir) == fs::weakly_canonical(s.model_dir)) {
    return absl::InvalidArgumentError(absl::StrCat(s.out_dir, ": output would replace the model"));
  }
  return absl::OkStatus();
}

absl::StatusOr<QuantizeJobResult> RunQuantizeJob(const QuantizeJobSpec& spec,
                                                 const ProgressFn& progress,
                                                 const SlqSolveFn& solve) {
  RETURN_IF_ERROR(ValidateSpec(spec));
  if (spec.slq && !solve) return absl::InvalidArgumentError("SLQ needs a solver (internal)");
  QuantizeJobResult result;
  std::map<std::string, PhaseTiming> phases;
  auto add_phase = [&](const std::string& name, double seconds) {
    PhaseTiming& p = phases[name];
    p.phase = name;
    p.seconds += seconds;
    p.peak_rss_bytes = std::max(p.peak_rss_bytes, eval::PeakRssBytes());
  };

  quant::QuantScheme scheme;
  scheme.bits = spec.bits;
  scheme.grid = spec.grid == "sym" ? quant::Grid::kSymmetric : quant::Grid::kAsymmetric;
  scheme.group_size = spec.group_size;
  ASSIGN_OR_RETURN(quant::Scope scope, quant::ParseScope(spec.scope));
  ASSIGN_OR_RETURN(quant::GsqObjective objective, quant::ParseGsqObjective(spec.objective));
  ASSIGN_OR_RETURN(quant::ExportFormat format, quant::ParseExportFormat(spec.export_format));

  ASSIGN_OR_RETURN(std::unique_ptr<model::Model> model,
                   model::Model::Open(spec.model_dir, model::ComputeDType::kF32));
  // --device cuda: weights, activations, Hessians, GPTQ and GSQ on the GPU; quantized units
  // come back to the host for export.
  model->SetDevice(at::Device(spec.device == "cuda" ? at::kCUDA : at::kCPU));
  const model::ModelConfig& config = model->config();
  // Every in-scope linear must have a grid before any work starts.
  for (const std::string& name : model->checkpoint().Names()) {
    if (!quant::InQuantScope(name, scope)) continue;
    const storage::TensorInfo* info = model->checkpoint().Info(name);
    if (info == nullptr || info->shape.size() != 2) continue;
    if (info->shape[1] % spec.group_size != 0 && !spec.channel_fallback) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": ", info->shape[1], " input columns are not a multiple of --group ",
          spec.group_size, " and --no-channel-fallback was given"));
    }
  }
  ASSIGN_OR_RETURN(std::unique_ptr<tokenizer::Tokenizer> tok,
                   tokenizer::Tokenizer::FromFile(spec.model_dir + "/tokenizer.json"));
  ASSIGN_OR_RETURN(std::string calib_text, ReadWholeFile(spec.calib_path, "calibration file"));
  if (spec.evaluate) {
    RETURN_IF_ERROR(ReadWholeFile(spec.eval_text, "evaluation text").status());
  }
  // --threads sizes our fused kernels only: ATen's intra-op pool stays as it is, since OpenBLAS
  // already runs its own threads (OPENBLAS_NUM_THREADS) and two pools on two cores spin against
  // each other (calibrating tiny-qwen3-moe took 183 s with at::set_num_threads(2), 15 s
  // without, on a quieter machine).

  // Calibration windows: the shared recipe (BOS + 255 tokens), as many as calib_tokens asks.
  ResetPeakRss();
  auto t0 = Clock::now();
  std::vector<int32_t> ids = tok->Encode(calib_text, /*add_special_tokens=*/false);
  const int64_t want_windows = spec.calib_tokens / spec.window_tokens;
  const int64_t have_windows = static_cast<int64_t>(ids.size()) / (spec.window_tokens - 1);
  if (have_windows < want_windows) {
    return absl::InvalidArgumentError(absl::StrCat(
        spec.calib_path, ": ", ids.size(), " tokens give ", have_windows, " windows of ",
        spec.window_tokens, ", fewer than the ", want_windows, " that --calib-tokens ",
        spec.calib_tokens, " asks for"));
  }
  const int64_t bos = model->checkpoint().config().value("bos_token_id", 0);
  ASSIGN_OR_RETURN(at::Tensor windows, eval::MakeWindows(ids, spec.window_tokens, bos, spec.calib_path));
  windows = windows.narrow(0, 0, want_windows).contiguous();
  std::vector<at::Tensor> hidden;
  for (int64_t b = 0; b < want_windows; b += spec.batch_windows) {
    ASSIGN_OR_RETURN(at::Tensor h, model->Embed(windows.narrow(
                                       0, b, std::min<int64_t>(spec.batch_windows, want_windows - b))));
    hidden.push_back(h);
  }
  add_phase("calibrate", Since(t0));

  JobState job;
  job.spec = spec;
  job.scheme = scheme;
  job.scope = scope;
  job.objective = objective;
  job.windows = want_windows;
  job.hidden = std::move(hidden);
  job.model = std::move(model);

  // The planner's tasks, run in order in this process (the service leases the same tasks).
  PlanInput plan_input;
  plan_input.num_layers = config.num_layers;
  plan_input.layer_has_units.assign(config.num_layers, false);
  plan_input.layer_is_moe.assign(config.num_layers, false);
  for (const std::string& name : job.model->checkpoint().Names()) {
    int layer = -1;
    const storage::TensorInfo* info = job.model->checkpoint().Info(name);
    if (std::sscanf(name.c_str(), "model.layers.%d.", &layer) == 1 && layer >= 0 &&
        layer < config.num_layers && info != nullptr && info->shape.size() == 2 &&
        quant::InQuantScope(name, scope)) {
      plan_input.layer_has_units[layer] = true;
    }
  }
  for (int layer = 0; layer < config.num_layers; ++layer) {
    plan_input.layer_is_moe[layer] = config.IsMoeLayer(layer);
  }
  plan_input.gsq = spec.method == "gsq";
  plan_input.evaluate = spec.evaluate;
  plan_input.slq = spec.slq;
  if (spec.slq) {
    t0 = Clock::now();
    RETURN_IF_ERROR(StartProbePass(job, windows));
    add_phase("probe", Since(t0));
  }
  const Plan plan = PlanQuantizeJob(plan_input);
  const std::string quantize_phase = spec.method == "rtn" ? "rtn" : "gptq";
  for (const Task& task : plan.tasks) {
    if (task.kind == TaskKind::kWrite || task.kind == TaskKind::kEvaluate) continue;  // below
    std::string phase;
    absl::Status status;
    ResetPeakRss();
    t0 = Clock::now();
    switch (task.kind) {
      case TaskKind::kCalibrate:
        phase = task.probe_pass ? "probe" : "calibrate";
        status = task.probe_pass ? RunProbeCalibrateTask(job, task.layer)
                                 : RunCalibrateTask(job, task.layer);
        break;
      case TaskKind::kProbe:
        phase = "probe";
        status = RunProbeTask(job);
        break;
      case TaskKind::kSolve:
        phase = "solve";
        status = RunSolveTask(job, solve);
        break;
      case TaskKind::kQuantize:
        phase = quantize_phase;
        status = RunQuantizeTask(job);
        break;
      case TaskKind::kGsq:
        phase = "gsq";
        status = RunGsqTask(job, task.shard, task.shards);
        break;
      default:
        phase = task.probe_pass ? "probe" : "propagate";
        status = task.probe_pass ? RunProbePropagateTask(job, task.layer)
                                 : RunPropagateTask(job, task.layer);
        break;
    }
    if (!status.ok()) {
      return absl::Status(status.code(), absl::StrCat(task.Name(), ": ", status.message()));
    }
    if (spec.device == "cuda") quant::SyncDevice();
    const double seconds = Since(t0);
    add_phase(phase, seconds);
    result.tasks.emplace_back(task.Name(), seconds);
    if (progress && task.kind != TaskKind::kPropagate && task.kind != TaskKind::kSolve) {
      progress(phase, task.layer + 1, config.num_layers);
    }
  }
  job.hidden.clear();
  result.fallback_experts = job.fallback_experts;
  const std::map<std::string, quant::QuantizedWeight>& units = job.units;
  const std::vector<UnitReport>& reports = job.reports;

  // 5. Write.
  ResetPeakRss();
  t0 = Clock::now();
  quant::ExportOptions export_options;
  export_options.format = format;
  export_options.out_dir = spec.out_dir;
  export_options.overwrite = spec.overwrite;
  export_options.job_options = spec.ToJson();
  ASSIGN_OR_RETURN(quant::ExportStats stats,
                   quant::ExportCheckpoint(job.model->checkpoint(), units, export_options));
  add_phase("write", Since(t0));
  result.out_dir = spec.out_dir;
  result.units = static_cast<int64_t>(units.size());
  result.bits_per_quantized_param_true = stats.bits_per_quantized_param_true;
  result.bits_per_quantized_param_stored = stats.bits_per_quantized_param_stored;
  result.bits_per_param_true = stats.bits_per_param_true;
  result.bits_per_param_stored = stats.bits_per_param_stored;
  result.container_note = stats.container_note;
  if (job.gsq_units > 0) {
    result.gsq_mean_changed_fraction = job.gsq_changed_sum / job.gsq_units;
    result.gsq_mean_loss_ratio = job.gsq_ratio_sum / job.gsq_units;
  }

  // 6. Evaluate the written checkpoint against the original.
  if (spec.evaluate) {
    ResetPeakRss();
    t0 = Clock::now();
    eval::EvalJobOptions eo;
    eo.model_dir = spec.out_dir;
    eo.reference_dir = spec.model_dir;
    eo.text_path = spec.eval_text;
    eo.batch_windows = spec.batch_windows;
    eo.device = spec.device;
    ASSIGN_OR_RETURN(eval::EvalJobResult er,
                     eval::RunEvalJob(eo, [&](const std::string& phase, int64_t d, int64_t t) {
                       if (progress) progress("eval " + phase, d, t);
                     }));
    result.evaluated = true;
    result.eval = er.summary;
    add_phase("eval", Since(t0));
  }
  result.slq = job.solve_report;
  for (const char* name :
       {"probe", "solve", "calibrate", "rtn", "gptq", "gsq", "propagate", "write", "eval"}) {
    if (phases.count(name)) result.phases.push_back(phases[name]);
  }

  // SLQ: the chosen bits as a heat map beside the report (best effort: a note if gnuplot fails).
  if (spec.slq) {
    const std::string png = spec.out_dir + "/slq_bits.png";
    absl::Status drawn = WriteSlqHeatmap(job.solve_report, png);
    job.solve_report["heatmap"] = drawn.ok() ? png : std::string(drawn.message());
    result.slq = job.solve_report;
  }
  // report.json (beside the checkpoint; written atomically after it).
  nlohmann::json units_json = nlohmann::json::array();
  for (const UnitReport& r : reports) {
    nlohmann::json u = {{"name", r.name},          {"bits", r.bits},
                        {"grid", r.grid},          {"group_size", r.group_size},
                        {"method", r.method},      {"proxy_loss", r.proxy_loss},
                        {"tokens", r.tokens},      {"fallback_identity_hessian", r.fallback},
                        {"seconds", r.seconds}};
    if (r.gsq_loss_before >= 0) {
      u["gsq_loss_before"] = r.gsq_loss_before;
      u["gsq_loss_after"] = r.gsq_loss_after;
      u["gsq_changed_fraction"] = r.changed_fraction;
    }
    units_json.push_back(u);
  }
  nlohmann::json phases_json = nlohmann::json::array();
  for (const PhaseTiming& p : result.phases) {
    phases_json.push_back(
        {{"phase", p.phase}, {"seconds", p.seconds}, {"peak_rss_bytes", p.peak_rss_bytes}});
  }
  nlohmann::json tasks_json = nlohmann::json::array();
  for (const auto& [name, seconds] : result.tasks) {
    tasks_json.push_back({{"task", name}, {"seconds", seconds}});
  }
  nlohmann::json report = {
      {"options", spec.ToJson()},
      {"tasks", tasks_json},
      {"units", units_json},
      {"fallback_experts", result.fallback_experts},
      {"phases", phases_json},
      {"bits_per_param",
       {{"quantized_true", stats.bits_per_quantized_param_true},
        {"quantized_stored", stats.bits_per_quantized_param_stored},
        {"checkpoint_true", stats.bits_per_param_true},
        {"checkpoint_stored", stats.bits_per_param_stored}}},
      {"container_note", stats.container_note},
  };
  if (spec.slq) report["slq"] = job.solve_report;
  if (result.evaluated) {
    auto iv = [](const eval::Interval& i) { return nlohmann::json{i.value, i.lo, i.hi}; };
    report["eval"] = {{"text", spec.eval_text},        {"windows", result.eval.windows},
                      {"ppl", iv(result.eval.ppl)},     {"kl", iv(result.eval.kl)},
                      {"ear", iv(result.eval.ear)},     {"ear_top10", iv(result.eval.ear_top10)},
                      {"flip_rate", iv(result.eval.flip_rate)},
                      {"next_token_acc", iv(result.eval.accuracy)}};
  }
  result.report_path = spec.out_dir + "/report.json";
  const std::string tmp = result.report_path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << report.dump(1) << "\n";
    if (!out) return absl::DataLossError(absl::StrCat(tmp, ": write failed"));
  }
  fs::rename(tmp, result.report_path);
  return result;
}

}  // namespace quant::tasks
