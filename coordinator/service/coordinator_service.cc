#include "coordinator/service/coordinator_service.h"

#include <openssl/crypto.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "common/metrics.h"
#include "storage/checkpoint.h"
#include "worker/model/config.h"
#include "worker/tasks/job_spec.h"
#include "worker/tasks/plan.h"
#include "worker/tasks/plan_input.h"

namespace quant::coordinator {
namespace {

namespace fs = std::filesystem;

grpc::Status ToGrpc(const absl::Status& s) {
  grpc::StatusCode code = grpc::StatusCode::UNKNOWN;
  switch (s.code()) {
    case absl::StatusCode::kOk: return grpc::Status::OK;
    case absl::StatusCode::kInvalidArgument: code = grpc::StatusCode::INVALID_ARGUMENT; break;
    case absl::StatusCode::kNotFound: code = grpc::StatusCode::NOT_FOUND; break;
    case absl::StatusCode::kAlreadyExists: code = grpc::StatusCode::ALREADY_EXISTS; break;
    case absl::StatusCode::kFailedPrecondition: code = grpc::StatusCode::FAILED_PRECONDITION; break;
    case absl::StatusCode::kUnavailable: code = grpc::StatusCode::UNAVAILABLE; break;
    default: code = grpc::StatusCode::INTERNAL; break;
  }
  return grpc::Status(code, std::string(s.message()));
}

grpc::Status CheckProtocol(uint32_t protocol) {
  if (protocol != static_cast<uint32_t>(v1::PROTOCOL_VERSION)) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        absl::StrCat("protocol version ", protocol, " is not this coordinator's ",
                                     static_cast<int>(v1::PROTOCOL_VERSION),
                                     ": upgrade the client or the worker"));
  }
  return grpc::Status::OK;
}

v1::JobState ToProto(JobStatus s) {
  switch (s) {
    case JobStatus::kRunning: return v1::JOB_RUNNING;
    case JobStatus::kSucceeded: return v1::JOB_SUCCEEDED;
    case JobStatus::kFailed: return v1::JOB_FAILED;
    case JobStatus::kCancelled: return v1::JOB_CANCELLED;
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

// Whether `path` (symlinks and ".." resolved; the part that does not exist yet taken as written)
// lies inside one of `roots`.
// An s3:// location is inside an s3:// root that is a prefix of it at a "/" boundary.
bool Inside(const std::string& path, const std::vector<std::string>& roots) {
  if (storage::IsS3Location(path)) {
    if (absl::StrContains(path, "/../") || absl::EndsWith(path, "/..")) return false;
    for (std::string root : roots) {
      while (root.size() > 5 && root.back() == '/') root.pop_back();
      if (storage::IsS3Location(root) && (path == root || absl::StartsWith(path, root + "/"))) {
        return true;
      }
    }
    return false;
  }
  std::error_code ec;
  const fs::path real = fs::weakly_canonical(fs::absolute(path, ec), ec);
  if (ec) return false;
  for (const std::string& root : roots) {
    const fs::path r = fs::weakly_canonical(fs::absolute(root, ec), ec);
    if (ec) continue;
    auto rel = real.lexically_relative(r);
    if (!rel.empty() && *rel.begin() != ".." && !rel.is_absolute()) return true;
  }
  return false;
}

grpc::Status CheckRoots(const tasks::QuantizeJobSpec& spec, const std::vector<std::string>& roots) {
  if (roots.empty()) return grpc::Status::OK;
  for (const auto& [field, path] : std::vector<std::pair<std::string, std::string>>{
           {"model", spec.model_dir}, {"out", spec.out_dir}, {"calib", spec.calib_path},
           {"eval_text", spec.evaluate ? spec.eval_text : ""},
           {"slq_allocation", spec.slq_allocation}}) {
    if (path.empty()) continue;
    if (!Inside(path, roots)) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          absl::StrCat("job spec: \"", field, "\": ", path,
                                       " is outside the coordinator's allowed roots"));
    }
  }
  return grpc::Status::OK;
}

void CountTask(const char* outcome) {
  metrics::Default()
      .GetCounter("quant_task_outcomes_total", "Task attempts by outcome.", {{"outcome", outcome}})
      .Inc();
}

}  // namespace

double Now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

CoordinatorService::CoordinatorService(StateStore* state, ServiceOptions options)
    : state_(state), options_(std::move(options)) {}

grpc::Status CoordinatorService::CheckToken(grpc::ServerContext* ctx) const {
  if (options_.token.empty()) return grpc::Status::OK;
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  const std::string expected = "Bearer " + options_.token;
  if (it == md.end() || it->second.size() != expected.size() ||
      CRYPTO_memcmp(it->second.data(), expected.data(), expected.size()) != 0) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "a valid bearer token is required (authorization: Bearer ...)");
  }
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::Submit(grpc::ServerContext* ctx, const v1::SubmitRequest* req,
                                        v1::SubmitResponse* resp) {
  if (auto s = CheckProtocol(req->protocol()); !s.ok()) return s;
  if (auto s = CheckToken(ctx); !s.ok()) return s;
  const std::string& client_id = req->job().client_job_id();
  if (client_id.empty() || client_id.size() > 128) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "client_job_id: required, at most 128 bytes");
  }
  absl::StatusOr<tasks::QuantizeJobSpec> spec = tasks::SpecFromJson(req->job().spec_json());
  if (!spec.ok()) return ToGrpc(spec.status());
  if (auto s = CheckRoots(*spec, options_.roots); !s.ok()) return s;
  if (spec->slq) {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                        "job spec: \"slq\": SLQ's probe pass runs in `qctl quantize` only; the "
                        "service does not run it yet");
  }
  auto checkpoint = storage::Checkpoint::Open(spec->model_dir);
  if (!checkpoint.ok()) return ToGrpc(checkpoint.status());
  auto config = model::ModelConfig::FromJson((*checkpoint)->config(),
                                             spec->model_dir + "/config.json");
  if (!config.ok()) return ToGrpc(config.status());
  auto plan_input = tasks::PlanInputFor(**checkpoint, *config, *spec);
  if (!plan_input.ok()) return ToGrpc(plan_input.status());
  const tasks::Plan plan = tasks::PlanQuantizeJob(*plan_input);
  // Preflight estimate (a model; --dry-run returns only this).
  const tasks::JobEstimate est = tasks::EstimateJob(**checkpoint, *config, *spec);
  v1::Estimate* e = resp->mutable_estimate();
  e->set_worker_memory_bytes(est.worker_memory_bytes);
  e->set_storage_bytes(est.output_bytes);
  e->set_scratch_bytes(est.scratch_bytes);
  e->set_seconds_per_worker(est.seconds_per_worker);
  e->set_gsq_tflop_per_worker(est.gsq_tflop_per_worker);
  e->set_assumed_tflops(est.assumed_tflops);
  e->set_peak_task(est.peak_task);
  if (req->dry_run()) return grpc::Status::OK;
  auto before = state_->ListJobs();
  if (!before.ok()) return ToGrpc(before.status());
  bool client_id_known = false;
  for (const JobRecord& j : *before) client_id_known = client_id_known || j.client_id == client_id;
  if (!client_id_known) {
    absl::StatusOr<bool> out_exists = storage::LocationExists(spec->out_dir);
    if (!out_exists.ok()) return ToGrpc(out_exists.status());
    if (*out_exists) {
      return grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                          absl::StrCat("job spec: \"out\": ", spec->out_dir, " already exists"));
    }
  }
  absl::StatusOr<std::string> fingerprint = Fingerprint(*spec, (*checkpoint)->store());
  if (!fingerprint.ok()) return ToGrpc(fingerprint.status());
  absl::StatusOr<int64_t> id = state_->SubmitJob(client_id, *fingerprint,
                                                 tasks::ServiceJson(*spec).dump(), plan);
  if (!id.ok()) return ToGrpc(id.status());
  resp->set_job_id(*id);
  bool existing = false;
  for (const JobRecord& j : *before) existing = existing || j.id == *id;
  resp->set_existing(existing);
  if (!existing) {
    metrics::Default().GetCounter("quant_jobs_submitted_total", "Jobs submitted.").Inc();
    Log(*id, "coordinator",
        absl::StrCat("submitted as ", client_id, ": ", plan.tasks.size(), " tasks"));
  }
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::FillStatus(int64_t job_id, bool with_tasks, v1::JobStatus* out) {
  absl::StatusOr<JobRecord> job = state_->GetJob(job_id);
  if (!job.ok()) return ToGrpc(job.status());
  out->set_job_id(job->id);
  out->set_client_job_id(job->client_id);
  out->set_state(ToProto(job->status));
  out->set_error(job->error);
  out->set_tasks_total(job->tasks_total);
  out->set_tasks_done(job->tasks_done);
  out->set_eta_seconds(-1);
  if (!with_tasks) return grpc::Status::OK;
  auto tasks = state_->Tasks(job_id);
  if (!tasks.ok()) return ToGrpc(tasks.status());
  for (const TaskRecord& t : *tasks) {
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
  }
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::Status(grpc::ServerContext*, const v1::JobRequest* req,
                                        v1::JobStatus* resp) {
  if (auto s = CheckProtocol(req->protocol()); !s.ok()) return s;
  return FillStatus(req->job_id(), /*with_tasks=*/true, resp);
}

grpc::Status CoordinatorService::Watch(grpc::ServerContext* ctx, const v1::JobRequest* req,
                                       grpc::ServerWriter<v1::JobStatus>* writer) {
  if (auto s = CheckProtocol(req->protocol()); !s.ok()) return s;
  std::string last;
  const double start = Now();
  int64_t done_at_start = -1;
  while (!ctx->IsCancelled()) {
    v1::JobStatus st;
    if (auto s = FillStatus(req->job_id(), /*with_tasks=*/true, &st); !s.ok()) return s;
    // ETA from the pace since the watch began (tasks are of unequal cost: a rough guide).
    if (done_at_start < 0) done_at_start = st.tasks_done();
    const int64_t done_since = st.tasks_done() - done_at_start;
    if (done_since > 0) {
      st.set_eta_seconds((Now() - start) / done_since * (st.tasks_total() - st.tasks_done()));
    }
    std::string key = absl::StrCat(st.state(), "|", st.tasks_done(), "|");
    for (const v1::TaskStatus& t : st.tasks()) {
      if (t.state() == "leased" || t.state() == "failed") absl::StrAppend(&key, t.task_id(), t.state());
    }
    if (key != last) {
      if (!writer->Write(st)) return grpc::Status::OK;  // the client went away
      last = key;
    }
    if (st.state() != v1::JOB_RUNNING) return grpc::Status::OK;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::List(grpc::ServerContext*, const v1::ListRequest* req,
                                      v1::ListResponse* resp) {
  if (auto s = CheckProtocol(req->protocol()); !s.ok()) return s;
  auto jobs = state_->ListJobs();
  if (!jobs.ok()) return ToGrpc(jobs.status());
  for (const JobRecord& j : *jobs) {
    if (auto s = FillStatus(j.id, /*with_tasks=*/false, resp->add_jobs()); !s.ok()) return s;
  }
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::Cancel(grpc::ServerContext* ctx, const v1::JobRequest* req,
                                        v1::CancelResponse*) {
  if (auto s = CheckProtocol(req->protocol()); !s.ok()) return s;
  if (auto s = CheckToken(ctx); !s.ok()) return s;
  const absl::Status cancelled = state_->CancelJob(req->job_id());
  if (cancelled.ok()) Log(req->job_id(), "coordinator", "cancelled");
  return ToGrpc(cancelled);
}

grpc::Status CoordinatorService::Register(grpc::ServerContext*, const v1::RegisterRequest* req,
                                          v1::RegisterResponse* resp) {
  if (auto s = CheckProtocol(req->protocol()); !s.ok()) return s;
  if (req->worker_id().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "worker_id is required");
  }
  SawWorker(req->worker_id());
  metrics::Default().GetCounter("quant_worker_registrations_total", "Worker registrations.").Inc();
  resp->set_lease_seconds(options_.lease_seconds);
  resp->set_heartbeat_seconds(options_.lease_seconds / 4);
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::Lease(grpc::ServerContext* ctx, const v1::LeaseRequest* req,
                                       v1::LeaseResponse* resp) {
  if (auto s = CheckProtocol(req->protocol()); !s.ok()) return s;
  const std::string& worker = req->worker_id();
  if (worker.empty() || worker.find(',') != std::string::npos || worker.size() > 128) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "worker_id: required, at most 128 bytes, no commas");
  }
  SawWorker(worker);
  // A long poll: a task that becomes ready within kLongPoll goes out at once, so idle workers
  // pick up a layer's parallel tasks together, and a gang forms from the workers asking.
  constexpr double kLongPoll = 2.0;
  constexpr double kForgetAfter = 1.0;  // a waiting worker that stopped asking leaves the gang
  const double until = Now() + kLongPoll;
  std::unique_lock<std::mutex> lock(lease_mu_);
  while (true) {
    const double now = Now();
    auto mine = formed_.find(worker);
    if (mine != formed_.end()) {
      *resp->mutable_task() = mine->second;
      formed_.erase(mine);
      CountTask("leased");
      return grpc::Status::OK;
    }
    auto ready = state_->ReadyTasks(now, 16);
    if (!ready.ok()) return ToGrpc(ready.status());
    for (const auto& [job_id, task_id] : *ready) {
      auto job = state_->GetJob(job_id);
      if (!job.ok()) return ToGrpc(job.status());
      auto task = FindTask(job_id, task_id, job->spec_json);
      if (!task.ok()) return ToGrpc(task.status());
      const int gang = (*task)->gang;
      std::vector<std::string> members = {worker};
      if (gang > 1) {
        auto& forming = forming_[{job_id, task_id}];
        forming[worker] = now;
        for (auto it = forming.begin(); it != forming.end();) {
          it = now - it->second > kForgetAfter ? forming.erase(it) : std::next(it);
        }
        if (static_cast<int>(forming.size()) < gang) break;  // wait for the rest of the gang
        members.clear();
        for (const auto& [w, seen] : forming) members.push_back(w);
        members.resize(gang);
      }
      std::string holders;
      for (const std::string& m : members) holders += (holders.empty() ? "" : ",") + m;
      auto lease = state_->LeaseTaskById(holders, now, job_id, task_id);
      if (!lease.ok()) return ToGrpc(lease.status());
      if (!lease->has_value()) continue;
      const quant::coordinator::Lease& l = **lease;
      v1::TaskLease t;
      t.set_job_id(l.job_id);
      t.set_task_id(l.task_id);
      t.set_epoch(l.epoch);
      t.set_name(l.name);
      t.set_kind(l.kind);
      t.set_layer(l.layer);
      t.set_shard((*task)->shard);
      t.set_shards((*task)->shards);
      t.set_spec_json(job->spec_json);
      t.set_job_dir(JobDir(l.job_id));
      t.set_deadline_seconds(l.deadline - now);
      for (const std::string& m : members) t.add_gang(m);
      Log(l.job_id, "coordinator",
          absl::StrCat(l.name, " epoch ", l.epoch, " leased to ", holders));
      if (gang > 1) {
        for (size_t r = 0; r < members.size(); ++r) {
          t.set_rank(static_cast<int>(r));
          formed_[members[r]] = t;
          forming_[{job_id, task_id}].erase(members[r]);
        }
        if (forming_[{job_id, task_id}].empty()) forming_.erase({job_id, task_id});
        metrics::Default()
            .GetCounter("quant_gang_formations_total",
                        "Gangs formed for a task; re-formed: after a failed or lost member.",
                        {{"kind", l.epoch > 1 ? "re-formed" : "formed"}})
            .Inc();
        break;  // this worker's lease is in formed_
      }
      *resp->mutable_task() = t;
      CountTask("leased");
      return grpc::Status::OK;
    }
    if (formed_.count(worker)) continue;
    if (now >= until || ctx->IsCancelled()) {
      resp->set_retry_after_seconds(0.1);
      return grpc::Status::OK;
    }
    lock.unlock();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    lock.lock();
  }
}

grpc::Status CoordinatorService::StoreSet(grpc::ServerContext*, const v1::StoreRequest* req,
                                          v1::StoreResponse*) {
  if (auto s = CheckProtocol(req->protocol()); !s.ok()) return s;
  if (!req->key().starts_with("g/") || req->key().size() > 256 || req->value().size() > 65536) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "rendezvous key must start with g/ (at most 256 bytes), value at most "
                        "64 KiB");
  }
  std::lock_guard<std::mutex> lock(store_mu_);
  if (store_.size() >= 65536 && !store_.count(req->key())) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "rendezvous store is full");
  }
  store_[req->key()] = req->value();
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::StoreGet(grpc::ServerContext*, const v1::StoreRequest* req,
                                          v1::StoreResponse* resp) {
  if (auto s = CheckProtocol(req->protocol()); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(store_mu_);
  auto it = store_.find(req->key());
  resp->set_found(it != store_.end());
  if (it != store_.end()) resp->set_value(it->second);
  return grpc::Status::OK;
}

void CoordinatorService::DropStoreKeys(int64_t job_id, int64_t task_id) {
  const std::string prefix = absl::StrCat("g/", job_id, "/", task_id, "/");
  std::lock_guard<std::mutex> lock(store_mu_);
  for (auto it = store_.lower_bound(prefix); it != store_.end() && it->first.starts_with(prefix);) {
    it = store_.erase(it);
  }
}

grpc::Status CoordinatorService::Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest* req,
                                           v1::HeartbeatResponse* resp) {
  if (auto s = CheckProtocol(req->protocol()); !s.ok()) return s;
  metrics::Default().GetCounter("quant_heartbeats_total", "Worker heartbeats.").Inc();
  SawWorker(req->worker_id());
  const double now = Now();
  for (const v1::TaskLease& held : req->held()) {
    if (!state_->Heartbeat(held.job_id(), held.task_id(), held.epoch(), now).ok()) {
      resp->add_revoked_task_ids(held.task_id());  // stale epoch or cancelled job: stop it
    }
  }
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::Complete(grpc::ServerContext*, const v1::CompleteRequest* req,
                                          v1::CompleteResponse* resp) {
  if (auto s = CheckProtocol(req->protocol()); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(lease_mu_);
  const double now = Now();
  const int64_t job_id = req->job_id(), task_id = req->task_id(), epoch = req->epoch();
  // The job's spec and the task, read once for everything below.
  auto job = state_->GetJob(job_id);
  if (!job.ok()) return ToGrpc(job.status());
  auto found = FindTask(job_id, task_id, job->spec_json);
  if (!found.ok()) return ToGrpc(found.status());
  const tasks::Task& task = **found;
  auto spec = tasks::SpecFromJson(job->spec_json);
  if (!spec.ok()) return ToGrpc(spec.status());
  const tasks::TaskOutput output =
      tasks::TaskOutputPaths(JobDir(job_id), spec->out_dir, task, epoch);
  absl::Status s;
  if (req->ok()) {
    // The epoch is checked (and the lease renewed) before the output is committed, and nothing
    // can lease the task between the check and the commit (lease_mu_).
    s = state_->Heartbeat(job_id, task_id, epoch, now);
    if (s.ok()) {
      if (task.gang > 1) {
        // A gang commits once every member's part is in the attempt.
        auto& done = gang_done_[{job_id, task_id, epoch}];
        if (req->rank() >= 0 && req->rank() < task.gang) done.insert(req->rank());
        if (static_cast<int>(done.size()) < task.gang) {
          resp->set_committed(true);  // accepted; the task commits with the last member
          return grpc::Status::OK;
        }
        gang_done_.erase({job_id, task_id, epoch});
        DropStoreKeys(job_id, task_id);
      }
      const absl::Status commit = CommitOutput(task, output);
      s = commit.ok()
              ? state_->CompleteTask(job_id, task_id, epoch, now)
              : state_->FailTask(job_id, task_id, epoch, std::string(commit.message()), now);
      if (s.ok() && !commit.ok()) {
        CountTask("failed");
        Log(job_id, "coordinator", std::string(commit.message()));
        return grpc::Status::OK;
      }
    }
  } else {
    s = state_->FailTask(job_id, task_id, epoch, req->error(), now);
    if (s.ok()) {
      DropStoreKeys(job_id, task_id);
      gang_done_.erase({job_id, task_id, epoch});  // the attempt is over
    }
  }
  std::error_code ec;
  auto after = state_->GetJob(job_id);
  if (s.code() == absl::StatusCode::kFailedPrecondition) {
    resp->set_committed(false);  // a stale attempt: its output is discarded
    CountTask("stale");
    Log(job_id, req->worker_id(),
        absl::StrCat("task ", task_id, " epoch ", epoch, ": stale completion discarded"));
    fs::remove_all(output.attempt, ec);
    if (after.ok() && after->status != JobStatus::kRunning) fs::remove_all(JobDir(job_id), ec);
    return grpc::Status::OK;
  }
  if (!s.ok()) return ToGrpc(s);
  resp->set_committed(req->ok());
  CountTask(req->ok() ? "done" : "failed");
  Log(job_id, req->worker_id(),
      absl::StrCat("task ", task_id, " epoch ", epoch,
                   req->ok() ? absl::StrCat(" committed (", req->seconds(), " s)")
                             : " failed: " + req->error()));
  if (after.ok() && after->status != JobStatus::kRunning) {
    Log(job_id, "coordinator",
        absl::StrCat("job ", JobStatusName(after->status), after->error.empty() ? "" : ": ",
                     after->error));
    if (after->status == JobStatus::kSucceeded) fs::remove_all(JobDir(job_id), ec);
  }
  metrics::Default()
      .GetHistogram("quant_task_duration_seconds", "Task durations reported by workers.",
                    metrics::DurationBounds())
      .Observe(req->seconds());
  if (req->ok() && task.layer >= 0) {
    metrics::Default()
        .GetCounter("quant_layer_task_seconds_total",
                    "Seconds of committed tasks per layer (a gang task: its last member's).",
                    {{"layer", std::to_string(task.layer)}})
        .Inc(req->seconds());
  }
  return grpc::Status::OK;
}

void CoordinatorService::Log(int64_t job_id, const std::string& source, const std::string& text) {
  std::lock_guard<std::mutex> lock(logs_mu_);
  auto& lines = logs_[job_id];
  v1::LogLine l;
  l.set_time(Now());
  l.set_source(source);
  l.set_text(text);
  lines.push_back(std::move(l));
  while (lines.size() > kMaxLogLines) lines.pop_front();
}

grpc::Status CoordinatorService::Logs(grpc::ServerContext*, const v1::JobRequest* req,
                                      v1::LogsResponse* resp) {
  if (auto s = CheckProtocol(req->protocol()); !s.ok()) return s;
  auto job = state_->GetJob(req->job_id());
  if (!job.ok()) return ToGrpc(job.status());
  std::lock_guard<std::mutex> lock(logs_mu_);
  auto it = logs_.find(req->job_id());
  if (it != logs_.end()) {
    for (const v1::LogLine& l : it->second) *resp->add_lines() = l;
  }
  return grpc::Status::OK;
}

void CoordinatorService::SawWorker(const std::string& id) {
  std::lock_guard<std::mutex> lock(workers_mu_);
  worker_seen_[id] = Now();
}

void CoordinatorService::RefreshGauges() {
  auto& m = metrics::Default();
  auto jobs = state_->ListJobs();
  if (jobs.ok()) {
    std::map<std::string, int> job_count, task_count;
    for (const char* s : {"running", "succeeded", "failed", "cancelled"}) job_count[s] = 0;
    for (const char* s : {"pending", "leased", "done", "failed"}) task_count[s] = 0;
    for (const JobRecord& j : *jobs) {
      ++job_count[JobStatusName(j.status)];
      if (j.status != JobStatus::kRunning) continue;
      auto tasks = state_->Tasks(j.id);
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
  std::lock_guard<std::mutex> lock(workers_mu_);
  int alive = 0;
  const double now = Now();
  for (const auto& [id, seen] : worker_seen_) alive += now - seen < options_.lease_seconds;
  m.GetGauge("quant_workers", "Workers heard from within one lease period.").Set(alive);
}

std::string CoordinatorService::JobDir(int64_t job_id) const {
  return absl::StrCat(options_.scratch, "/job-", job_id);
}

absl::StatusOr<const tasks::Task*> CoordinatorService::FindTask(int64_t job_id, int64_t task_id,
                                                                const std::string& spec_json) {
  std::lock_guard<std::mutex> lock(plans_mu_);
  auto it = plans_.find(job_id);
  if (it == plans_.end()) {
    ASSIGN_OR_RETURN(tasks::QuantizeJobSpec spec, tasks::SpecFromJson(spec_json));
    ASSIGN_OR_RETURN(tasks::Plan plan, tasks::PlanJob(spec));
    it = plans_.emplace(job_id, std::move(plan)).first;
  }
  for (const tasks::Task& t : it->second.tasks) {
    if (t.id == task_id) return &t;
  }
  return absl::NotFoundError(absl::StrCat("job ", job_id, " has no task ", task_id));
}

absl::Status CoordinatorService::CommitOutput(const tasks::Task& task,
                                              const tasks::TaskOutput& out) {
  std::error_code ec;
  if (!fs::exists(out.attempt, ec)) {
    return absl::DataLossError(absl::StrCat(task.Name(), ": the worker reported success but ",
                                            out.attempt, " is missing"));
  }
  if (fs::is_directory(out.attempt) && fs::exists(out.committed, ec)) {
    fs::remove_all(out.attempt, ec);  // committed before (a restart between commit and done)
    return absl::OkStatus();
  }
  fs::create_directories(fs::path(out.committed).parent_path(), ec);
  fs::rename(out.attempt, out.committed, ec);
  if (ec) return absl::DataLossError(absl::StrCat(task.Name(), ": commit: ", ec.message()));
  return absl::OkStatus();
}

}  // namespace quant::coordinator
