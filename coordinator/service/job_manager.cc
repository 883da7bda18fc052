// Jobs: submit, status, watch, cancel, the plan, the commit rule and cleanup (see job_manager.h).
#include "coordinator/service/job_manager.h"

#include <filesystem>
#include <fstream>
#include <cstdlib>
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/atomic_file.h"
#include "common/file.h"
#include "common/metrics.h"
#include "common/status.h"
#include "job/config_check.h"
#include "job/slq_job.h"
#include "job/slq_solver.h"
#include "job/job_spec.h"
#include "job/model_config.h"
#include "storage/beneath.h"
#include "storage/checkpoint.h"
#include "storage/output_location.h"

namespace quant::coordinator {
namespace {

namespace fs = std::filesystem;

v1::JobState ToProto(JobStatus s) {
  switch (s) {
    case JobStatus::kRunning:
      return v1::JOB_RUNNING;
    case JobStatus::kSucceeded:
      return v1::JOB_SUCCEEDED;
    case JobStatus::kFailed:
      return v1::JOB_FAILED;
    case JobStatus::kCancelled:
      return v1::JOB_CANCELLED;
  }
  return v1::JOB_STATE_UNSPECIFIED;
}

// What the job's result depends on: its options and the model's files (names, sizes, and
// modification times or ETags).
absl::StatusOr<std::string> Fingerprint(const tasks::QuantizeJobSpec& spec,
                                        const storage::ObjectStore& model) {
  std::string key = spec.ToJson().dump();
  ASSIGN_OR_RETURN(const std::string files, storage::DescribeFiles(model));
  absl::StrAppend(&key, "|", files);
  return absl::StrFormat("%016x", std::hash<std::string>{}(key));
}

// Whether two output locations name one place (trailing slashes and, for local paths, symlinks
// and ".." resolved).
bool SameLocation(std::string a, std::string b) {
  while (a.size() > 1 && a.back() == '/') a.pop_back();
  while (b.size() > 1 && b.back() == '/') b.pop_back();
  if (storage::IsS3Location(a) || storage::IsS3Location(b)) return a == b;
  std::error_code ec;
  const fs::path x = fs::weakly_canonical(a, ec), y = fs::weakly_canonical(b, ec);
  return x.lexically_normal() == y.lexically_normal() ||
         fs::path(a).lexically_normal() == fs::path(b).lexically_normal();
}

}  // namespace

JobManager::JobManager(StateStore* state, JobLog* log, const Clock* clock,
                       const ServiceOptions& options)
    : state_(state), log_(log), clock_(clock), options_(options) {}

absl::Status JobManager::Submit(const std::string& client_id, const std::string& spec_json,
                                bool dry_run, v1::SubmitResponse* resp) {
  if (client_id.empty() || client_id.size() > 128 || tasks::HasControlCharacter(client_id)) {
    return absl::InvalidArgumentError(
        "client_job_id: required, at most 128 bytes, no control characters");
  }
  ASSIGN_OR_RETURN(const tasks::QuantizeJobSpec spec, tasks::SpecFromJson(spec_json));
  // A relative path would be resolved against this process's directory here and the worker's
  // there: two different files. qctl submit sends absolute paths.
  for (const auto& [field, path] : tasks::SpecPaths(spec)) {
    if (!path.empty() && !storage::IsS3Location(path) && !fs::path(path).is_absolute()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "job spec: \"", field, "\": ", path, " is relative; the service takes absolute paths"));
    }
  }
  RETURN_IF_ERROR(tasks::CheckSpecInsideRoots(spec, options_.roots,
                                              "is outside the coordinator's allowed roots"));
  ASSIGN_OR_RETURN(const auto checkpoint, storage::Checkpoint::Open(spec.model_dir));
  // Checked against the index first: planning and the estimate loop over the config's layers
  // (num_hidden_layers 1e9 took this call 14 s and then failed).
  ASSIGN_OR_RETURN(const auto config, model::ReadModelConfig(*checkpoint));
  ASSIGN_OR_RETURN(const auto plan_input, tasks::PlanInputFor(*checkpoint, config, spec));
  const tasks::Plan plan = tasks::PlanQuantizeJob(plan_input);
  // Preflight estimate (a model; --dry-run returns only this).
  const tasks::JobEstimate est = tasks::EstimateJob(*checkpoint, config, spec);
  v1::Estimate* e = resp->mutable_estimate();
  e->set_worker_memory_bytes(est.worker_memory_bytes);
  e->set_storage_bytes(est.output_bytes);
  e->set_scratch_bytes(est.scratch_bytes);
  e->set_seconds_per_worker(est.seconds_per_worker);
  e->set_gsq_tflop_per_worker(est.gsq_tflop_per_worker);
  e->set_assumed_tflops(est.assumed_tflops);
  e->set_peak_task(est.peak_task);
  if (dry_run) return absl::OkStatus();
  ASSIGN_OR_RETURN(const std::vector<JobRecord> before, state_->ListJobs());
  bool client_id_known = false;
  for (const JobRecord& j : before) client_id_known = client_id_known || j.client_id == client_id;
  if (!client_id_known) {
    // Two live jobs writing one location: the later commit would find the earlier's checkpoint
    // there and one of the two results would be lost while both reported success.
    for (const JobRecord& j : before) {
      if (j.status != JobStatus::kRunning) continue;
      absl::StatusOr<tasks::QuantizeJobSpec> other = tasks::SpecFromJson(j.spec_json);
      if (other.ok() && SameLocation(other->out_dir, spec.out_dir)) {
        return absl::AlreadyExistsError(absl::StrCat("job spec: \"out\": ", spec.out_dir,
                                                     " is the output of running job ", j.id, " (",
                                                     j.client_id, ")"));
      }
    }
    ASSIGN_OR_RETURN(const bool out_exists, storage::LocationExists(spec.out_dir));
    if (out_exists) {
      return absl::AlreadyExistsError(
          absl::StrCat("job spec: \"out\": ", spec.out_dir, " already exists"));
    }
  }
  ASSIGN_OR_RETURN(const std::string fingerprint, Fingerprint(spec, checkpoint->store()));
  ASSIGN_OR_RETURN(const int64_t id, state_->SubmitJob(client_id, fingerprint,
                                                       tasks::ServiceJson(spec).dump(), plan));
  resp->set_job_id(id);
  bool existing = false;
  for (const JobRecord& j : before) existing = existing || j.id == id;
  resp->set_existing(existing);
  if (!existing && spec.slq) RETURN_IF_ERROR(TakeCachedProbes(id, spec, *checkpoint, plan));
  if (!existing) {
    metrics::Default().GetCounter("quant_jobs_submitted_total", "Jobs submitted.").Inc();
    log_->Append(id, "coordinator",
                 absl::StrCat("submitted as ", client_id, ": ", plan.tasks.size(), " tasks"));
  }
  return absl::OkStatus();
}

absl::Status JobManager::Status(int64_t job_id, bool with_tasks, v1::JobStatus* out) {
  ASSIGN_OR_RETURN(const JobRecord job, state_->GetJob(job_id));
  out->set_job_id(job.id);
  out->set_client_job_id(job.client_id);
  out->set_state(ToProto(job.status));
  out->set_error(job.error);
  out->set_tasks_total(job.tasks_total);
  out->set_tasks_done(job.tasks_done);
  out->set_eta_seconds(-1);
  RETURN_IF_ERROR(SlqStatus(job, out));
  if (!with_tasks) return absl::OkStatus();
  ASSIGN_OR_RETURN(const std::vector<TaskRecord> tasks, state_->Tasks(job_id));
  for (const TaskRecord& t : tasks) {
    v1::TaskStatus* p = out->add_tasks();
    p->set_task_id(t.task_id);
    p->set_name(t.name);
    p->set_kind(t.kind);
    p->set_layer(t.layer);
    p->set_state(TaskStatusName(t.status));
    p->set_epoch(t.epoch);
    p->set_attempts(t.attempts);
    p->set_executions(t.executions);
    p->set_worker(t.worker);
    p->set_last_error(t.last_error);
    if (t.status == TaskStatus::kLeased) {
      std::optional<v1::TaskProgress> progress = log_->Progress(job_id, t.task_id, t.epoch);
      if (progress) *p->mutable_progress() = *std::move(progress);
    }
  }
  return absl::OkStatus();
}

void JobManager::RunCoordinatorTasks() {
  std::lock_guard<std::mutex> lock(solve_mu_);
  absl::StatusOr<std::vector<std::pair<int64_t, int64_t>>> ready =
      state_->ReadyCoordinatorTasks(clock_->Now());
  if (!ready.ok()) return;
  for (const auto& [job_id, task_id] : *ready) {
    absl::Status s = Solve(job_id, task_id);
    if (s.ok()) continue;
    // Not retried on every lease call: the job fails with the reason (a missing probe table,
    // a model that cannot be opened here).
    const std::string error = absl::StrCat("solve: ", s.message());
    log_->Append(job_id, "coordinator", error);
    state_->FinishCoordinatorTask(job_id, task_id, "", error).IgnoreError();
  }
}

// SLQ's solve on the coordinator: every probe table (stored as each probe committed), the
// units from the checkpoint's metadata, the knapsack; the allocation goes to the solve's
// committed output (allocation.json, what ScratchTaskIO reads) and into the state.
absl::Status JobManager::Solve(int64_t job_id, int64_t task_id) {
  // For the fault tests only: QUANT_TEST_EXIT_BEFORE_SOLVE=FILE makes this process exit as a
  // kill -9 would, once (FILE records it), after every probe committed and before the solve.
  if (const char* marker = std::getenv("QUANT_TEST_EXIT_BEFORE_SOLVE");
      marker != nullptr && *marker != '\0' && !fs::exists(marker)) {
    std::ofstream(marker) << "exited before the solve\n";
    std::_Exit(137);
  }
  ASSIGN_OR_RETURN(const JobRecord job, state_->GetJob(job_id));
  ASSIGN_OR_RETURN(const tasks::Task* task, FindTask(job_id, task_id, job.spec_json));
  ASSIGN_OR_RETURN(const tasks::QuantizeJobSpec spec, tasks::SpecFromJson(job.spec_json));
  ASSIGN_OR_RETURN(const tasks::Plan* plan, PlanOf(job_id, job.spec_json));
  ASSIGN_OR_RETURN(const auto results, state_->TaskResults(job_id));
  tasks::ProbeTable probes;
  int64_t probes_run = 0;
  for (const tasks::Task& t : plan->tasks) {
    if (t.kind != tasks::TaskKind::kProbe) continue;
    auto it = results.find(t.id);
    if (it == results.end()) {
      return absl::DataLossError(absl::StrCat(task->Name(), ": ", t.Name(), " has no stored table"));
    }
    const std::string label = absl::StrCat("job ", job_id, " ", t.Name(), "'s probe table");
    ASSIGN_OR_RETURN(const int64_t run,
                     tasks::MergeProbeTableJson(nlohmann::json::parse(it->second, nullptr, false),
                                                label, &probes));
    probes_run += run;
  }
  ASSIGN_OR_RETURN(const auto checkpoint, storage::Checkpoint::Open(spec.model_dir));
  ASSIGN_OR_RETURN(const tasks::SlqUnits units, tasks::SlqUnitsOf(*checkpoint, spec));
  absl::StatusOr<tasks::SlqSolveResult> solved =
      tasks::SolveSlq(spec, units, probes, probes_run, /*probes_cached=*/0, slq::SolveTables);
  if (!solved.ok()) {
    const std::string error = absl::StrCat(task->Name(), ": ", solved.status().message());
    log_->Append(job_id, "coordinator", error);
    return state_->FinishCoordinatorTask(job_id, task_id, "", error);
  }
  const std::string allocation =
      tasks::SlqAllocationJson(solved->unit_bits, solved->report).dump(1) + "\n";
  const tasks::TaskOutput output =
      tasks::TaskOutputPaths(JobDir(job_id), spec.out_dir, *task, /*epoch=*/1);
  std::error_code ec;
  fs::remove_all(output.attempt, ec);
  // Only this process runs the solve: an allocation committed by a run that died before it
  // recorded the task (its report's timing differs) is replaced, not compared.
  fs::remove_all(output.committed, ec);
  fs::create_directories(output.attempt, ec);
  RETURN_IF_ERROR(WriteFileAtomically(output.attempt + "/allocation.json", allocation));
  RETURN_IF_ERROR(CommitOutput(*task, output));
  RETURN_IF_ERROR(state_->FinishCoordinatorTask(job_id, task_id, allocation));
  const nlohmann::json& r = solved->report;
  log_->Append(job_id, "coordinator",
               absl::StrFormat("%s: %zu units, average %.3f bits, predicted KL %.4f, EAR %.4f "
                               "(%d probes, %.3f s)",
                               task->Name(), units.params.size(), r.value("average_bits", 0.0),
                               r.value("predicted_kl", 0.0), r.value("predicted_ear", 0.0),
                               static_cast<int>(probes_run), solved->seconds));
  return absl::OkStatus();
}

absl::Status JobManager::TakeCachedProbes(int64_t job_id, const tasks::QuantizeJobSpec& spec,
                                          const storage::Checkpoint& checkpoint,
                                          const tasks::Plan& plan) {
  ASSIGN_OR_RETURN(const std::string key, ProbeKeyOf(job_id, spec, checkpoint));
  ASSIGN_OR_RETURN(const auto cached, state_->ProbeCache(key));
  if (cached.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(const tasks::SlqUnits units, tasks::SlqUnitsOf(checkpoint, spec));
  int taken = 0;
  for (const tasks::Task& t : plan.tasks) {
    if (t.kind != tasks::TaskKind::kProbe || !cached.count(t.layer)) continue;
    tasks::ProbeTable table;
    const std::string prefix = absl::StrCat("model.layers.", t.layer, ".");
    if (!tasks::MergeProbeTableJson(nlohmann::json::parse(cached.at(t.layer), nullptr, false),
                                    "probe cache", &table)
             .ok() ||
        !tasks::CoversLayer(table, units, prefix, spec.slq_bits)) {
      continue;
    }
    // The cached table with no probe counted as run by this job.
    RETURN_IF_ERROR(state_->FinishCoordinatorTask(
        job_id, t.id, tasks::ProbeTableJson(table, prefix, 0).dump(), "", "probe cache"));
    ++taken;
  }
  if (taken > 0) {
    log_->Append(job_id, "coordinator",
                 absl::StrCat(taken, " probe tasks taken from the probe cache"));
  }
  return absl::OkStatus();
}

void JobManager::RememberProbeTable(int64_t job_id, const tasks::Task& task,
                                    const std::string& table) {
  absl::StatusOr<std::string> key = ProbeKeyOf(job_id);
  if (!key.ok()) return;  // no key: the table is not cached (never cached wrongly)
  state_->PutProbeCache(*key, task.layer, table).IgnoreError();
}

absl::StatusOr<std::string> JobManager::ProbeKeyOf(int64_t job_id) {
  {
    std::lock_guard<std::mutex> lock(probe_keys_mu_);
    auto it = probe_keys_.find(job_id);
    if (it != probe_keys_.end()) return it->second;
  }
  // Once per job and process: the model's index and file listing (a probe commits per layer).
  ASSIGN_OR_RETURN(const JobRecord job, state_->GetJob(job_id));
  ASSIGN_OR_RETURN(const tasks::QuantizeJobSpec spec, tasks::SpecFromJson(job.spec_json));
  ASSIGN_OR_RETURN(const auto checkpoint, storage::Checkpoint::Open(spec.model_dir));
  return ProbeKeyOf(job_id, spec, *checkpoint);
}

absl::StatusOr<std::string> JobManager::ProbeKeyOf(int64_t job_id,
                                                   const tasks::QuantizeJobSpec& spec,
                                                   const storage::Checkpoint& checkpoint) {
  ASSIGN_OR_RETURN(const std::string files, storage::DescribeFiles(checkpoint.store()));
  const std::string key = tasks::ProbeCacheKey(spec, files);
  std::lock_guard<std::mutex> lock(probe_keys_mu_);
  probe_keys_[job_id] = key;
  return key;
}

absl::Status JobManager::SlqStatus(const JobRecord& job, v1::JobStatus* out) {
  const absl::StatusOr<tasks::QuantizeJobSpec> spec = tasks::SpecFromJson(job.spec_json);
  if (!spec.ok() || !spec->slq) return absl::OkStatus();
  ASSIGN_OR_RETURN(const auto results, state_->TaskResults(job.id));
  ASSIGN_OR_RETURN(const tasks::Plan* plan, PlanOf(job.id, job.spec_json));
  for (const tasks::Task& t : plan->tasks) {
    if (t.kind != tasks::TaskKind::kSolve || !results.count(t.id)) continue;
    const nlohmann::json a = nlohmann::json::parse(results.at(t.id), nullptr, false);
    if (a.is_discarded() || !a.contains("solve_report")) continue;
    const nlohmann::json& r = a["solve_report"];
    v1::SlqAllocation* slq = out->mutable_slq();
    slq->set_mode(r.value("mode", ""));
    slq->set_average_bits(r.value("average_bits", 0.0));
    slq->set_predicted_kl(r.value("predicted_kl", 0.0));
    slq->set_predicted_ear(r.value("predicted_ear", 0.0));
    slq->set_probes_run(r.value("probes_run", int64_t{0}));
    for (const nlohmann::json& u : r.value("units", nlohmann::json::array())) {
      (*slq->mutable_unit_bits())[u.value("unit", "")] = u.value("bits", 0);
    }
  }
  return absl::OkStatus();
}

absl::Status JobManager::List(v1::ListResponse* out) {
  ASSIGN_OR_RETURN(const std::vector<JobRecord> jobs, state_->ListJobs());
  for (const JobRecord& j : jobs) {
    RETURN_IF_ERROR(Status(j.id, /*with_tasks=*/false, out->add_jobs()));
  }
  return absl::OkStatus();
}

absl::Status JobManager::Cancel(int64_t job_id) {
  RETURN_IF_ERROR(state_->CancelJob(job_id));
  log_->Append(job_id, "coordinator", "cancelled");
  CleanUpJob(job_id);
  return absl::OkStatus();
}

absl::Status JobManager::Watch(int64_t job_id, const std::function<bool()>& cancelled,
                               const std::function<bool(const v1::JobStatus&)>& write) {
  std::string last;
  const double start = clock_->Now();
  int64_t done_at_start = -1;
  while (!cancelled()) {
    const uint64_t seen = log_->Changes();  // before reading: a change meanwhile is not missed
    v1::JobStatus st;
    RETURN_IF_ERROR(Status(job_id, /*with_tasks=*/true, &st));
    // ETA from the pace since the watch began (tasks are of unequal cost: a rough guide).
    if (done_at_start < 0) done_at_start = st.tasks_done();
    const int64_t done_since = st.tasks_done() - done_at_start;
    if (done_since > 0) {
      st.set_eta_seconds((clock_->Now() - start) / done_since *
                         (st.tasks_total() - st.tasks_done()));
    }
    std::string key = absl::StrCat(st.state(), "|", st.tasks_done(), "|");
    for (const v1::TaskStatus& t : st.tasks()) {
      if (t.state() == "leased" || t.state() == "failed") {
        absl::StrAppend(&key, t.task_id(), t.state());
      }
      if (t.has_progress()) {  // a new report (a GSQ step, or seconds of a long task)
        absl::StrAppend(&key, "|", t.progress().phase(), t.progress().step(), "/",
                        static_cast<int64_t>(t.progress().seconds()));
      }
    }
    if (key != last) {
      if (!write(st)) return absl::OkStatus();  // the client went away
      last = key;
    }
    if (st.state() != v1::JOB_RUNNING) return absl::OkStatus();
    // Woken by a change, or after a second for what only time changes (a lease expiring, the
    // ETA) and to notice a client that went away.
    log_->WaitForChange(seen, 1.0);
  }
  return absl::OkStatus();
}

absl::Status JobManager::Logs(int64_t job_id, v1::LogsResponse* out) {
  RETURN_IF_ERROR(state_->GetJob(job_id).status());
  for (v1::LogLine& l : log_->Lines(job_id)) *out->add_lines() = std::move(l);
  return absl::OkStatus();
}

absl::StatusOr<const tasks::Plan*> JobManager::PlanOf(int64_t job_id,
                                                      const std::string& spec_json) {
  std::lock_guard<std::mutex> lock(plans_mu_);
  auto it = plans_.find(job_id);
  if (it == plans_.end()) {
    ASSIGN_OR_RETURN(tasks::QuantizeJobSpec spec, tasks::SpecFromJson(spec_json));
    ASSIGN_OR_RETURN(tasks::Plan plan, tasks::PlanJob(spec));
    it = plans_.emplace(job_id, std::move(plan)).first;
  }
  return &it->second;
}

absl::StatusOr<const tasks::Task*> JobManager::FindTask(int64_t job_id, int64_t task_id,
                                                        const std::string& spec_json) {
  ASSIGN_OR_RETURN(const tasks::Plan* plan, PlanOf(job_id, spec_json));
  for (const tasks::Task& t : plan->tasks) {
    if (t.id == task_id) return &t;
  }
  return absl::NotFoundError(absl::StrCat("job ", job_id, " has no task ", task_id));
}

std::string JobManager::JobDir(int64_t job_id) const {
  return absl::StrCat(options_.scratch, "/job-", job_id);
}

absl::Status JobManager::CommitOutput(const tasks::Task& task, const tasks::TaskOutput& out) {
  std::string attempt = out.attempt, committed = out.committed;
  std::unique_ptr<storage::PinnedDir> pinned;
  if (!options_.roots.empty() && task.kind == tasks::TaskKind::kWrite &&
      !committed.starts_with(options_.scratch + "/")) {
    // The user's output location: resolved beneath its root now, at use, so that a symlink put
    // in place of a directory after the submission cannot move the checkpoint elsewhere.
    ASSIGN_OR_RETURN(
        pinned, storage::OpenDirBeneath(options_.roots, fs::path(committed).parent_path().string(),
                                        /*create=*/true));
    attempt = pinned->path() + "/" + fs::path(attempt).filename().string();
    committed = pinned->path() + "/" + fs::path(committed).filename().string();
  }
  std::error_code ec;
  if (!fs::exists(attempt, ec)) {
    return absl::DataLossError(absl::StrCat(task.Name(), ": the worker reported success but ",
                                            out.attempt, " is missing"));
  }
  if (fs::is_directory(attempt) && fs::exists(committed, ec)) {
    // Committed before (a restart between the commit and its record), or something else is
    // there: a checkpoint is the same one only if its manifest (per-shard checksums) is.
    if (task.kind == tasks::TaskKind::kWrite) {
      const std::string manifest = std::string("/") + storage::kCheckpointManifest;
      absl::StatusOr<std::string> mine = ReadWholeFile(attempt + manifest, "manifest");
      absl::StatusOr<std::string> there = ReadWholeFile(committed + manifest, "manifest");
      if (!mine.ok() || !there.ok() || *mine != *there) {
        return absl::FailedPreconditionError(
            absl::StrCat(task.Name(), ": commit: ", out.committed,
                         " already holds other content (another job's output?); not replacing it"));
      }
    }
    fs::remove_all(attempt, ec);
    return absl::OkStatus();
  }
  if (pinned == nullptr) fs::create_directories(fs::path(committed).parent_path(), ec);
  // Renamed and both directories fsynced (common/atomic_file.h's rule): a commit recorded in
  // the state store is on disk.
  if (absl::Status s = RenameDurably(attempt, committed); !s.ok()) {
    return absl::DataLossError(absl::StrCat(task.Name(), ": commit: ", s.message()));
  }
  return absl::OkStatus();
}

void JobManager::CleanUpJob(int64_t job_id) {
  {
    std::lock_guard<std::mutex> lock(cleaned_mu_);
    if (!cleaned_.insert(job_id).second) return;
  }
  log_->DropProgress(job_id);
  absl::StatusOr<JobRecord> job = state_->GetJob(job_id);
  if (!job.ok() || job->status == JobStatus::kRunning) {
    std::lock_guard<std::mutex> lock(cleaned_mu_);
    cleaned_.erase(job_id);
    return;
  }
  std::error_code ec;
  if (job->status == JobStatus::kSucceeded || !options_.keep_failed_scratch) {
    fs::remove_all(JobDir(job_id), ec);
  }
  if (job->status != JobStatus::kCancelled) return;
  absl::StatusOr<tasks::QuantizeJobSpec> spec = tasks::SpecFromJson(job->spec_json);
  if (!spec.ok() || storage::IsS3Location(spec->out_dir)) return;  // s3: published last
  std::string out = spec->out_dir;
  std::unique_ptr<storage::PinnedDir> parent;
  if (!options_.roots.empty()) {
    absl::StatusOr<std::unique_ptr<storage::PinnedDir>> pinned = storage::OpenDirBeneath(
        options_.roots, fs::path(out).parent_path().string(), /*create=*/false);
    if (!pinned.ok()) return;
    parent = std::move(*pinned);
    out = parent->path() + "/" + fs::path(out).filename().string();
  }
  if (fs::exists(fs::path(out) / storage::kCheckpointManifest, ec)) {
    fs::remove_all(out, ec);
    log_->Append(job_id, "coordinator",
                 absl::StrCat("cancelled: removed the checkpoint at ", spec->out_dir));
  }
}

void JobManager::SweepEndedJobs() {
  {
    std::lock_guard<std::mutex> lock(cleaned_mu_);
    const double now = clock_->Now();
    if (now - last_sweep_ < options_.sweep_every_seconds) return;
    last_sweep_ = now;
  }
  absl::StatusOr<std::vector<JobRecord>> jobs = state_->ListJobs();
  if (!jobs.ok()) return;
  for (const JobRecord& j : *jobs) {
    if (j.status != JobStatus::kRunning) CleanUpJob(j.id);
  }
}

void JobManager::RefreshGauges() {
  auto& m = metrics::Default();
  absl::StatusOr<std::vector<JobRecord>> jobs = state_->ListJobs();
  if (!jobs.ok()) return;
  std::map<std::string, int> job_count, task_count;
  for (const char* s : {"running", "succeeded", "failed", "cancelled"}) job_count[s] = 0;
  for (const char* s : {"pending", "leased", "done", "failed"}) task_count[s] = 0;
  for (const JobRecord& j : *jobs) {
    ++job_count[JobStatusName(j.status)];
    if (j.status != JobStatus::kRunning) continue;
    absl::StatusOr<std::vector<TaskRecord>> tasks = state_->Tasks(j.id);
    if (!tasks.ok()) continue;
    for (const TaskRecord& t : *tasks) ++task_count[TaskStatusName(t.status)];
  }
  for (const auto& [state, n] : job_count) {
    m.GetGauge("quant_jobs", "Jobs by state.", {{"state", state}}).Set(n);
  }
  for (const auto& [state, n] : task_count) {
    m.GetGauge("quant_tasks", "Tasks of running jobs by state.", {{"state", state}}).Set(n);
  }
}

}  // namespace quant::coordinator
