#include "coordinator/service/coordinator_service.h"

#include <openssl/crypto.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/exceptions.h"
#include "common/atomic_file.h"
#include "common/file.h"
#include "common/status.h"
#include "common/metrics.h"
#include "storage/beneath.h"
#include "storage/checkpoint.h"
#include "storage/output_location.h"
#include "job/model_config.h"
#include "job/config_check.h"
#include "job/job_spec.h"
#include "job/plan.h"
#include "job/plan_input.h"
#include "proto/task_wire.h"

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
    case absl::StatusCode::kPermissionDenied: code = grpc::StatusCode::PERMISSION_DENIED; break;
    case absl::StatusCode::kUnavailable: code = grpc::StatusCode::UNAVAILABLE; break;
    case absl::StatusCode::kResourceExhausted: code = grpc::StatusCode::RESOURCE_EXHAUSTED; break;
    default: code = grpc::StatusCode::INTERNAL; break;
  }
  return grpc::Status(code, std::string(s.message()));
}

// What escapes a handler (std::bad_alloc above all) as a status naming the RPC, rather than
// gRPC's own "Unexpected error in RPC handling". Call only inside a catch block.
grpc::Status ExceptionToGrpc(const char* rpc) {
  return ToGrpc(CurrentExceptionStatus(absl::StrCat("coordinator: ", rpc)));
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

grpc::Status CoordinatorService::CheckWorker(grpc::ServerContext* ctx,
                                            const std::string& worker_id) const {
  bool authenticated = options_.worker_token.empty() && options_.worker_cert_cn.empty();
  if (!authenticated && !options_.worker_token.empty()) {
    const auto& md = ctx->client_metadata();
    auto it = md.find("authorization");
    const std::string expected = "Bearer " + options_.worker_token;
    authenticated = it != md.end() && it->second.size() == expected.size() &&
                    CRYPTO_memcmp(it->second.data(), expected.data(), expected.size()) == 0;
  }
  if (!authenticated && !options_.worker_cert_cn.empty()) {
    // Set by gRPC only for a verified client certificate (the server requires mTLS then).
    const std::shared_ptr<const grpc::AuthContext> auth = ctx->auth_context();
    for (const grpc::string_ref& cn : auth->FindPropertyValues("x509_common_name")) {
      authenticated = authenticated || std::string_view(cn.data(), cn.size())
                                           .starts_with(options_.worker_cert_cn);
    }
  }
  if (!authenticated) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "workers must authenticate: a worker token (authorization: Bearer ...) "
                        "or a worker client certificate");
  }
  if (worker_id.empty() || worker_id.size() > 128 || worker_id.find(',') != std::string::npos ||
      tasks::HasControlCharacter(worker_id)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "worker_id: required, at most 128 bytes, no commas or control characters");
  }
  return grpc::Status::OK;
}

// Whether `worker` is one of the task's recorded holders (a gang's are comma-separated).
static bool IsHolder(const TaskRecord& task, const std::string& worker) {
  for (absl::string_view holder : absl::StrSplit(task.worker, ',')) {
    if (holder == worker) return true;
  }
  return false;
}

// "g/<job>/<task>/<epoch>/" of a key that CheckGangMember accepted.
static std::string AttemptPrefix(const std::string& key) {
  size_t end = 0;
  for (int slash = 0; slash < 4; ++slash) end = key.find('/', end) + 1;
  return key.substr(0, end);
}

grpc::Status CoordinatorService::CheckGangMember(const std::string& key,
                                                 const std::string& worker) {
  // "g/<job>/<task>/<epoch>/<rest>"
  const std::vector<std::string> parts = absl::StrSplit(key, absl::MaxSplits('/', 4));
  int64_t job_id = 0, task_id = 0, epoch = 0;
  if (parts.size() != 5 || parts[0] != "g" || !absl::SimpleAtoi(parts[1], &job_id) ||
      !absl::SimpleAtoi(parts[2], &task_id) || !absl::SimpleAtoi(parts[3], &epoch) ||
      key.size() > 256) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "rendezvous key must be g/<job>/<task>/<epoch>/... (at most 256 bytes)");
  }
  absl::StatusOr<TaskRecord> task = state_->GetTask(job_id, task_id);
  if (!task.ok() || task->status != TaskStatus::kLeased || task->epoch != epoch ||
      !IsHolder(*task, worker)) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat("rendezvous: ", worker, " is not a member of a live attempt ",
                                     "of job ", job_id, " task ", task_id, " epoch ", epoch));
  }
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::Submit(grpc::ServerContext* ctx, const v1::SubmitRequest* req,
                                        v1::SubmitResponse* resp) try {
  if (auto s = CheckProtocol(req->protocol()); !s.ok()) return s;
  if (auto s = CheckToken(ctx); !s.ok()) return s;
  const std::string& client_id = req->job().client_job_id();
  if (client_id.empty() || client_id.size() > 128 || tasks::HasControlCharacter(client_id)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "client_job_id: required, at most 128 bytes, no control characters");
  }
  absl::StatusOr<tasks::QuantizeJobSpec> spec = tasks::SpecFromJson(req->job().spec_json());
  if (!spec.ok()) return ToGrpc(spec.status());
  // A relative path would be resolved against this process's directory here and the worker's
  // there: two different files. qctl submit sends absolute paths.
  for (const auto& [field, path] : tasks::SpecPaths(*spec)) {
    if (!path.empty() && !storage::IsS3Location(path) && !fs::path(path).is_absolute()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("job spec: \"", field, "\": ", path,
                                       " is relative; the service takes absolute paths"));
    }
  }
  if (absl::Status s = tasks::CheckSpecInsideRoots(*spec, options_.roots,
                                                   "is outside the coordinator's allowed roots");
      !s.ok()) {
    return ToGrpc(s);
  }
  if (spec->slq) {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                        "job spec: \"slq\": SLQ's probe pass runs in `qctl quantize` only; the "
                        "service does not run it yet");
  }
  auto checkpoint = storage::Checkpoint::Open(spec->model_dir);
  if (!checkpoint.ok()) return ToGrpc(checkpoint.status());
  // Checked against the index first: planning and the estimate loop over the config's layers
  // (num_hidden_layers 1e9 took this call 14 s and then failed).
  auto config = model::ReadModelConfig(**checkpoint);
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
    // Two live jobs writing one location: the later commit would find the earlier's checkpoint
    // there and one of the two results would be lost while both reported success.
    for (const JobRecord& j : *before) {
      if (j.status != JobStatus::kRunning) continue;
      absl::StatusOr<tasks::QuantizeJobSpec> other = tasks::SpecFromJson(j.spec_json);
      if (other.ok() && SameLocation(other->out_dir, spec->out_dir)) {
        return grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                            absl::StrCat("job spec: \"out\": ", spec->out_dir,
                                         " is the output of running job ", j.id, " (",
                                         j.client_id, ")"));
      }
    }
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
} catch (...) {
  return ExceptionToGrpc("Submit");
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
    if (t.status == TaskStatus::kLeased) {
      std::lock_guard<std::mutex> lock(progress_mu_);
      auto it = progress_.find({job_id, t.task_id});
      if (it != progress_.end() && it->second.epoch() == t.epoch) {
        *p->mutable_progress() = it->second;
      }
    }
  }
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::Status(grpc::ServerContext*, const v1::JobRequest* req,
                                        v1::JobStatus* resp) try {
  if (auto s = CheckProtocol(req->protocol()); !s.ok()) return s;
  return FillStatus(req->job_id(), /*with_tasks=*/true, resp);
} catch (...) {
  return ExceptionToGrpc("Status");
}

grpc::Status CoordinatorService::Watch(grpc::ServerContext* ctx, const v1::JobRequest* req,
                                       grpc::ServerWriter<v1::JobStatus>* writer) try {
  if (auto s = CheckProtocol(req->protocol()); !s.ok()) return s;
  std::string last;
  const double start = Now();
  int64_t done_at_start = -1;
  while (!ctx->IsCancelled()) {
    const uint64_t seen = Changes();  // before reading: a change meanwhile is not missed
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
      if (t.has_progress()) {  // a new report (a GSQ step, or seconds of a long task)
        absl::StrAppend(&key, "|", t.progress().phase(), t.progress().step(), "/",
                        static_cast<int64_t>(t.progress().seconds()));
      }
    }
    if (key != last) {
      if (!writer->Write(st)) return grpc::Status::OK;  // the client went away
      last = key;
    }
    if (st.state() != v1::JOB_RUNNING) return grpc::Status::OK;
    // Woken by a change (NotifyChanged), or after a second for what only time changes (a lease
    // expiring, the ETA) and to notice a client that went away.
    WaitForChange(seen, 1.0);
  }
  return grpc::Status::OK;
} catch (...) {
  return ExceptionToGrpc("Watch");
}

grpc::Status CoordinatorService::List(grpc::ServerContext*, const v1::ListRequest* req,
                                      v1::ListResponse* resp) try {
  if (auto s = CheckProtocol(req->protocol()); !s.ok()) return s;
  auto jobs = state_->ListJobs();
  if (!jobs.ok()) return ToGrpc(jobs.status());
  for (const JobRecord& j : *jobs) {
    if (auto s = FillStatus(j.id, /*with_tasks=*/false, resp->add_jobs()); !s.ok()) return s;
  }
  return grpc::Status::OK;
} catch (...) {
  return ExceptionToGrpc("List");
}

grpc::Status CoordinatorService::Cancel(grpc::ServerContext* ctx, const v1::JobRequest* req,
                                        v1::CancelResponse*) try {
  if (auto s = CheckProtocol(req->protocol()); !s.ok()) return s;
  if (auto s = CheckToken(ctx); !s.ok()) return s;
  const absl::Status cancelled = state_->CancelJob(req->job_id());
  if (cancelled.ok()) {
    Log(req->job_id(), "coordinator", "cancelled");
    CleanUpJob(req->job_id());
  }
  return ToGrpc(cancelled);
} catch (...) {
  return ExceptionToGrpc("Cancel");
}

grpc::Status CoordinatorService::Register(grpc::ServerContext* ctx, const v1::RegisterRequest* req,
                                          v1::RegisterResponse* resp) try {
  if (auto s = CheckProtocol(req->protocol()); !s.ok()) return s;
  if (auto s = CheckWorker(ctx, req->worker_id()); !s.ok()) return s;
  SawWorker(req->worker_id());
  metrics::Default().GetCounter("quant_worker_registrations_total", "Worker registrations.").Inc();
  resp->set_lease_seconds(options_.lease_seconds);
  resp->set_heartbeat_seconds(options_.lease_seconds / 4);
  return grpc::Status::OK;
} catch (...) {
  return ExceptionToGrpc("Register");
}

grpc::Status CoordinatorService::Lease(grpc::ServerContext* ctx, const v1::LeaseRequest* req,
                                       v1::LeaseResponse* resp) try {
  if (auto s = CheckProtocol(req->protocol()); !s.ok()) return s;
  const std::string& worker = req->worker_id();
  if (auto s = CheckWorker(ctx, worker); !s.ok()) return s;
  SawWorker(worker);
  SweepEndedJobs();
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
      const coordinator::Lease& l = **lease;
      DropStoreKeys(job_id, task_id);  // an earlier attempt's rendezvous ends with it
      v1::TaskLease t;
      t.set_job_id(l.job_id);
      t.set_task_id(l.task_id);
      t.set_epoch(l.epoch);
      t.set_name(l.name);
      t.set_spec_json(job->spec_json);
      // The task itself, its inputs' committed paths and this epoch's attempt: the worker runs
      // it as it is, without planning the job (DESIGN.md section 2).
      auto spec = tasks::SpecFromJson(job->spec_json);
      if (!spec.ok()) return ToGrpc(spec.status());
      auto plan = PlanOf(job_id, job->spec_json);
      if (!plan.ok()) return ToGrpc(plan.status());
      wire::LeasedTaskToProto(
          tasks::LeaseTask(**plan, **task, JobDir(l.job_id), spec->out_dir, l.epoch),
          t.mutable_task());
      t.set_job_dir(JobDir(l.job_id));
      for (const std::string& root : options_.roots) t.add_roots(root);
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
} catch (...) {
  return ExceptionToGrpc("Lease");
}

grpc::Status CoordinatorService::StoreSet(grpc::ServerContext* ctx, const v1::StoreRequest* req,
                                          v1::StoreResponse*) try {
  if (auto s = CheckProtocol(req->protocol()); !s.ok()) return s;
  if (auto s = CheckWorker(ctx, req->worker_id()); !s.ok()) return s;
  if (req->value().size() > kMaxStoreValueBytes) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "rendezvous value: at most 64 KiB");
  }
  if (auto s = CheckGangMember(req->key(), req->worker_id()); !s.ok()) return s;
  // Bounded per attempt: Gloo's and NCCL's rendezvous for a gang of g set about 2g keys of
  // under 1 KiB each, so these limits leave room for gangs of 64 and then some.
  const std::string attempt = AttemptPrefix(req->key());
  std::lock_guard<std::mutex> lock(store_mu_);
  size_t keys = 0, bytes = 0;
  for (auto it = store_.lower_bound(attempt); it != store_.end() && it->first.starts_with(attempt);
       ++it) {
    if (it->first == req->key()) continue;
    ++keys;
    bytes += it->second.size();
  }
  if (keys + 1 > kMaxStoreKeysPerAttempt || bytes + req->value().size() > kMaxStoreBytesPerAttempt) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("rendezvous of ", attempt, " is full (at most ",
                                     kMaxStoreKeysPerAttempt, " keys and ",
                                     kMaxStoreBytesPerAttempt >> 20, " MiB)"));
  }
  store_[req->key()] = req->value();
  return grpc::Status::OK;
} catch (...) {
  return ExceptionToGrpc("StoreSet");
}

grpc::Status CoordinatorService::StoreGet(grpc::ServerContext* ctx, const v1::StoreRequest* req,
                                          v1::StoreResponse* resp) try {
  if (auto s = CheckProtocol(req->protocol()); !s.ok()) return s;
  if (auto s = CheckWorker(ctx, req->worker_id()); !s.ok()) return s;
  if (auto s = CheckGangMember(req->key(), req->worker_id()); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(store_mu_);
  auto it = store_.find(req->key());
  resp->set_found(it != store_.end());
  if (it != store_.end()) resp->set_value(it->second);
  return grpc::Status::OK;
} catch (...) {
  return ExceptionToGrpc("StoreGet");
}

void CoordinatorService::DropStoreKeys(int64_t job_id, int64_t task_id) {
  const std::string prefix = absl::StrCat("g/", job_id, "/", task_id, "/");
  std::lock_guard<std::mutex> lock(store_mu_);
  for (auto it = store_.lower_bound(prefix); it != store_.end() && it->first.starts_with(prefix);) {
    it = store_.erase(it);
  }
}

grpc::Status CoordinatorService::Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                                           v1::HeartbeatResponse* resp) try {
  if (auto s = CheckProtocol(req->protocol()); !s.ok()) return s;
  if (auto s = CheckWorker(ctx, req->worker_id()); !s.ok()) return s;
  metrics::Default().GetCounter("quant_heartbeats_total", "Worker heartbeats.").Inc();
  SawWorker(req->worker_id());
  const double now = Now();
  for (const v1::TaskLease& held : req->held()) {
    if (!Holds(held.job_id(), held.task_id(), req->worker_id()) ||
        !state_->Heartbeat(held.job_id(), held.task_id(), held.epoch(), now).ok()) {
      resp->add_revoked_task_ids(held.task_id());  // stale epoch or cancelled job: stop it
    }
  }
  for (const v1::TaskProgress& p : req->progress()) {
    // Only a holder of the task's live lease, at that epoch, may report it; anything else is
    // dropped (not an error: a report may cross a revocation).
    absl::StatusOr<TaskRecord> task = state_->GetTask(p.job_id(), p.task_id());
    if (!task.ok() || task->status != TaskStatus::kLeased || task->epoch != p.epoch() ||
        !IsHolder(*task, req->worker_id()) || p.phase().size() > 32) {
      continue;
    }
    v1::TaskProgress kept = p;
    kept.set_worker(req->worker_id());
    {
      std::lock_guard<std::mutex> lock(progress_mu_);
      progress_[{p.job_id(), p.task_id()}] = std::move(kept);
    }
    NotifyChanged();
  }
  return grpc::Status::OK;
} catch (...) {
  return ExceptionToGrpc("Heartbeat");
}

grpc::Status CoordinatorService::Complete(grpc::ServerContext* ctx, const v1::CompleteRequest* req,
                                          v1::CompleteResponse* resp) try {
  if (auto s = CheckProtocol(req->protocol()); !s.ok()) return s;
  if (auto s = CheckWorker(ctx, req->worker_id()); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(lease_mu_);
  const double now = Now();
  const int64_t job_id = req->job_id(), task_id = req->task_id(), epoch = req->epoch();
  if (!Holds(job_id, task_id, req->worker_id())) {
    // Not (or no longer) a holder: a late worker whose lease passed to another gang, or a
    // worker naming a task it never held. Nothing of the task's state or outputs is touched.
    resp->set_committed(false);
    CountTask("stale");
    Log(job_id, "coordinator",
        absl::StrCat("task ", task_id, " epoch ", epoch, ": completion from ", req->worker_id(),
                     ", not a holder of its lease: discarded"));
    return grpc::Status::OK;
  }
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
    if (after.ok() && after->status != JobStatus::kRunning) CleanUpJob(job_id);
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
    CleanUpJob(job_id);
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
} catch (...) {
  return ExceptionToGrpc("Complete");
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
  NotifyChanged();  // every change a watcher shows is logged: submission, leases, completions
}

void CoordinatorService::NotifyChanged() {
  {
    std::lock_guard<std::mutex> lock(changes_mu_);
    ++changes_;
  }
  changed_.notify_all();
}

uint64_t CoordinatorService::Changes() {
  std::lock_guard<std::mutex> lock(changes_mu_);
  return changes_;
}

void CoordinatorService::WaitForChange(uint64_t seen, double max_seconds) {
  std::unique_lock<std::mutex> lock(changes_mu_);
  changed_.wait_for(lock, std::chrono::milliseconds(static_cast<int64_t>(max_seconds * 1000)),
                    [&] { return changes_ != seen; });
}

grpc::Status CoordinatorService::Logs(grpc::ServerContext*, const v1::JobRequest* req,
                                      v1::LogsResponse* resp) try {
  if (auto s = CheckProtocol(req->protocol()); !s.ok()) return s;
  auto job = state_->GetJob(req->job_id());
  if (!job.ok()) return ToGrpc(job.status());
  std::lock_guard<std::mutex> lock(logs_mu_);
  auto it = logs_.find(req->job_id());
  if (it != logs_.end()) {
    for (const v1::LogLine& l : it->second) *resp->add_lines() = l;
  }
  return grpc::Status::OK;
} catch (...) {
  return ExceptionToGrpc("Logs");
}

bool CoordinatorService::Holds(int64_t job_id, int64_t task_id, const std::string& worker) {
  absl::StatusOr<TaskRecord> task = state_->GetTask(job_id, task_id);
  return task.ok() && IsHolder(*task, worker);
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

void CoordinatorService::SweepEndedJobs() {
  {
    std::lock_guard<std::mutex> lock(cleaned_mu_);
    const double now = Now();
    if (now - last_sweep_ < 5) return;
    last_sweep_ = now;
  }
  absl::StatusOr<std::vector<JobRecord>> jobs = state_->ListJobs();
  if (!jobs.ok()) return;
  for (const JobRecord& j : *jobs) {
    if (j.status != JobStatus::kRunning) CleanUpJob(j.id);
  }
}

void CoordinatorService::CleanUpJob(int64_t job_id) {
  {
    std::lock_guard<std::mutex> lock(cleaned_mu_);
    if (!cleaned_.insert(job_id).second) return;
  }
  {
    std::lock_guard<std::mutex> lock(progress_mu_);
    progress_.erase(progress_.lower_bound({job_id, INT64_MIN}),
                    progress_.lower_bound({job_id + 1, INT64_MIN}));
  }
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
    Log(job_id, "coordinator", absl::StrCat("cancelled: removed the checkpoint at ",
                                            spec->out_dir));
  }
}

std::string CoordinatorService::JobDir(int64_t job_id) const {
  return absl::StrCat(options_.scratch, "/job-", job_id);
}

absl::StatusOr<const tasks::Plan*> CoordinatorService::PlanOf(int64_t job_id,
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

absl::StatusOr<const tasks::Task*> CoordinatorService::FindTask(int64_t job_id, int64_t task_id,
                                                                const std::string& spec_json) {
  ASSIGN_OR_RETURN(const tasks::Plan* plan, PlanOf(job_id, spec_json));
  for (const tasks::Task& t : plan->tasks) {
    if (t.id == task_id) return &t;
  }
  return absl::NotFoundError(absl::StrCat("job ", job_id, " has no task ", task_id));
}

absl::Status CoordinatorService::CommitOutput(const tasks::Task& task,
                                              const tasks::TaskOutput& out) {
  std::string attempt = out.attempt, committed = out.committed;
  std::unique_ptr<storage::PinnedDir> pinned;
  if (!options_.roots.empty() && task.kind == tasks::TaskKind::kWrite &&
      !committed.starts_with(options_.scratch + "/")) {
    // The user's output location: resolved beneath its root now, at use, so that a symlink put
    // in place of a directory after the submission cannot move the checkpoint elsewhere.
    ASSIGN_OR_RETURN(pinned, storage::OpenDirBeneath(options_.roots,
                                                     fs::path(committed).parent_path().string(),
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
        return absl::FailedPreconditionError(absl::StrCat(
            task.Name(), ": commit: ", out.committed,
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

}  // namespace quant::coordinator
