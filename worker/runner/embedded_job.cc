// RunQuantizeJob: the calibration windows' embeddings, then the planner's tasks in order by one
// TaskRunner over a MemoryTaskIO: per layer calibrate (Hessians, expert tokens and
// full-precision targets with the original layer), quantize (RTN, GPTQ, GSQ), propagate (the
// quantized layer makes the next layer's inputs); then write, evaluate and publish.
#include "worker/runner/embedded_job.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file.h"
#include "common/status.h"
#include "storage/object_store.h"
#include "storage/output_location.h"
#include "worker/eval/eval_job.h"
#include "worker/eval/eval_pipeline.h"
#include "worker/model/calibration.h"
#include "worker/model/model.h"
#include "worker/quant/export.h"
#include "worker/quant/gptq.h"
#include "worker/quant/gsq.h"
#include "worker/quant/quantizer.h"
#include "job/scope.h"
#include "job/job_spec.h"
#include "worker/tasks/layer_tasks.h"
#include "worker/runner/memory_task_io.h"
#include "worker/runner/task_runner.h"
#include "job/plan.h"
#include "job/plan_input.h"
#include "worker/tasks/task_guard.h"
#include "worker/tasks/task_state.h"
#include "worker/tasks/slq_tasks.h"
#include "worker/tasks/torch_profile.h"
#include "worker/tokenizer/calib_source.h"
#include "worker/tokenizer/tokenizer.h"

namespace quant::tasks {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// A temporary local directory (under TMPDIR), removed with everything in it when it goes.
class StagingDir {
 public:
  StagingDir() = default;
  StagingDir(const StagingDir&) = delete;
  StagingDir& operator=(const StagingDir&) = delete;
  ~StagingDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  absl::Status Create() {
    std::string tmpl = (fs::temp_directory_path() / "qctl-out-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      return absl::ErrnoToStatus(errno, tmpl + ": cannot create a staging directory");
    }
    path_ = tmpl;
    return absl::OkStatus();
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Resets the kernel's resident high-water mark so each phase reports its own peak.
void ResetPeakRss() {
  std::ofstream clear("/proc/self/clear_refs");
  if (clear) clear << "5";
}

// A failure after work was done says what had finished, so the user knows what was lost.
absl::Status FailedAfter(const absl::Status& s,
                         const std::vector<std::pair<std::string, double>>& finished) {
  if (s.ok() || finished.empty()) return s;
  double seconds = 0;
  for (const auto& [name, t] : finished) seconds += t;
  return absl::Status(s.code(), absl::StrFormat("%s (after %zu finished tasks, %.0f s, the last "
                                                "%s; none kept: this runner holds its work in "
                                                "memory, so the job must run again from the "
                                                "start)", s.message(), finished.size(), seconds,
                                                finished.back().first));
}

}  // namespace

absl::Status ValidateSpec(const QuantizeJobSpec& s) {
  RETURN_IF_ERROR(ValidateSpecFields(s, /*name_flags=*/true));
  if (s.device == Device::kCuda && !quant::GsqCudaAvailable()) {
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
  // The texts before any work (a late "cannot read" would cost the whole job).
  // A .jsonl file or a directory is read through once here, so that a bad record is one line
  // before the model is opened.
  ASSIGN_OR_RETURN(const tokenizer::CalibSource calib, tokenizer::ListCalibSource(s.calib_path));
  if (calib.plain_text) {
    RETURN_IF_ERROR(CheckFileReadable(s.calib_path, "calibration file"));
  } else {
    RETURN_IF_ERROR(tokenizer::CheckCalibSource(calib, s.calib_samples));
  }
  if (s.evaluate) RETURN_IF_ERROR(CheckFileReadable(s.eval_text, "evaluation text"));
  if (s.out_dir.empty()) return absl::InvalidArgumentError("--out is required");
  if (!storage::IsS3Location(s.out_dir)) {
    // Local: the location's checks (and its missing parents) before the model is read.
    return storage::PrepareLocalOutput(s.out_dir, s.model_dir, s.overwrite);
  }
  // An s3:// output's credentials, bucket and endpoint, by a signed listing of its prefix, before
  // any work: a bad secret, a missing bucket or an unreachable endpoint is one line now, not an
  // upload failure after the whole job.
  const absl::StatusOr<bool> listed = storage::LocationExists(s.out_dir);
  if (!listed.ok()) {
    return absl::Status(listed.status().code(),
                        absl::StrCat("--out ", s.out_dir, ": the output cannot be reached (checked "
                                     "before any work: credentials, bucket, endpoint): ",
                                     listed.status().message()));
  }
  const bool out_exists = *listed;
  if (out_exists && !s.overwrite) {
    return absl::AlreadyExistsError(
        absl::StrCat(s.out_dir, ": output directory already exists (pass --overwrite)"));
  }
  auto trim = [](std::string u) {
    while (!u.empty() && u.back() == '/') u.pop_back();
    return u;
  };
  if (trim(s.out_dir) == trim(s.model_dir)) {
    return absl::InvalidArgumentError(absl::StrCat(s.out_dir, ": output would replace the model"));
  }
  return absl::OkStatus();
}

absl::StatusOr<QuantizeJobResult> RunQuantizeJob(const QuantizeJobSpec& spec,
                                                 const ProgressFn& progress,
                                                 const SlqSolveFn& solve) {
  RETURN_IF_ERROR(ValidateSpec(spec));
  RETURN_IF_ERROR(CheckDiskSpace(spec, /*work_dir=*/""));  // before the model's weights are read
  QuantizeJobResult result;
  std::map<std::string, PhaseTiming> phases;
  auto add_phase = [&](const std::string& name, double seconds) {
    PhaseTiming& p = phases[name];
    p.phase = name;
    p.seconds += seconds;
    p.peak_rss_bytes = std::max(p.peak_rss_bytes, eval::PeakRssBytes());
    result.phases.clear();
    for (const char* phase : {"probe", "solve", "calibrate", "rtn", "gptq", "gsq", "propagate",
                              "write", "eval", "publish"}) {
      if (phases.count(phase)) result.phases.push_back(phases[phase]);
    }
  };

  // --threads sizes our fused kernels only: ATen's intra-op pool stays as it is, since OpenBLAS
  // already runs its own threads (OPENBLAS_NUM_THREADS) and two pools on two cores spin against
  // each other (calibrating tiny-qwen3-moe took 183 s with at::set_num_threads(2), 15 s
  // without, on a quieter machine).
  ResetPeakRss();
  auto t0 = Clock::now();
  TaskHooks hooks;
  hooks.on_eval_progress = [&](const std::string& phase, int64_t done, int64_t total) {
    if (progress) progress("eval " + phase, done, total);
  };
  TaskRunner runner(spec, std::move(hooks), solve);
  RETURN_IF_ERROR(runner.Open());
  JobState& job = runner.job();
  at::Tensor windows;
  RETURN_IF_ERROR(MakeCalibrationWindows(&job, &windows));
  ASSIGN_OR_RETURN(job.hidden, EmbedWindows(job, windows));
  add_phase("calibrate", Since(t0));
  const model::ModelConfig& config = job.model->config();

  // The planner's tasks, run in order in this process (the service leases the same tasks).
  ASSIGN_OR_RETURN(PlanInput plan_input,
                   PlanInputFor(job.model->checkpoint(), config, spec));
  if (spec.slq) {
    t0 = Clock::now();
    RETURN_IF_ERROR(StartProbePass(job, windows));
    add_phase("probe", Since(t0));
  }
  const Plan plan = PlanQuantizeJob(plan_input);
  // The checkpoint goes to out_dir, or to a local staging directory that the publish task
  // uploads when out_dir is an s3:// prefix.
  StagingDir staging;
  std::string out = spec.out_dir;
  if (storage::IsS3Location(spec.out_dir)) {
    RETURN_IF_ERROR(staging.Create());
    out = staging.path() + "/out";
  }
  MemoryTaskIO io(job, out, spec.overwrite, &result);
  for (const Task& task : plan.tasks) {
    const std::string phase = PhaseOf(task, spec);
    ResetPeakRss();
    t0 = Clock::now();
    const ProfileScope scope(task.Name());
    TaskOutcome outcome;
    absl::Status status = GuardTask(task, [&]() -> absl::Status {
      ASSIGN_OR_RETURN(outcome, runner.Run(task, io));
      return absl::OkStatus();
    });
    if (!status.ok()) return FailedAfter(status, result.tasks);
    if (spec.device == Device::kCuda) quant::SyncDevice();
    const double seconds = Since(t0);
    add_phase(phase, seconds);
    result.tasks.emplace_back(task.Name(), seconds);
    if (outcome.written) {
      result.units = static_cast<int64_t>(job.units.size());
      SetExportStats(*outcome.written, &result);
    }
    if (outcome.evaluated) {
      result.evaluated = true;
      result.eval = outcome.evaluated->summary;
      result.eval_windows = outcome.evaluated->window_stats;
    }
    result.uploaded_bytes += outcome.uploaded_bytes;
    if (progress && task.layer >= 0 && task.kind != TaskKind::kPropagate &&
        task.kind != TaskKind::kSolve) {
      progress(phase, task.layer + 1, config.num_layers);
    }
  }
  result.out_dir = spec.out_dir;
  result.report_path = spec.out_dir + "/report.json";
  result.fallback_experts = job.fallback_experts;
  if (job.gsq_units > 0) {
    result.gsq_mean_changed_fraction = job.gsq_changed_sum / job.gsq_units;
    result.gsq_mean_loss_ratio = job.gsq_ratio_sum / job.gsq_units;
  }
  result.slq = job.solve_report;
  return result;
}

}  // namespace quant::tasks
