// Workers, leases, gangs, heartbeats and completions (see lease_manager.h).
#include "coordinator/service/lease_manager.h"

#include <chrono>
#include <filesystem>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/file.h"
#include "common/metrics.h"
#include "common/status.h"
#include "job/job_spec.h"
#include "job/plan_input.h"
#include "proto/task_wire.h"

namespace quant::coordinator {
namespace {

namespace fs = std::filesystem;

void CountTask(const char* outcome) {
  metrics::Default()
      .GetCounter("quant_task_outcomes_total", "Task attempts by outcome.", {{"outcome", outcome}})
      .Inc();
}

}  // namespace

LeaseManager::LeaseManager(StateStore* state, JobManager* jobs, RendezvousStore* rendezvous,
                           JobLog* log, const Clock* clock, const ServiceOptions& options)
    : state_(state),
      jobs_(jobs),
      rendezvous_(rendezvous),
      log_(log),
      clock_(clock),
      options_(options) {}

v1::RegisterResponse LeaseManager::Register(const std::string& worker) {
  SawWorker(worker);
  metrics::Default().GetCounter("quant_worker_registrations_total", "Worker registrations.").Inc();
  v1::RegisterResponse resp;
  resp.set_lease_seconds(options_.lease_seconds);
  resp.set_heartbeat_seconds(options_.lease_seconds / 4);
  return resp;
}

absl::Status LeaseManager::Lease(const std::string& worker, const std::function<bool()>& cancelled,
                                 v1::LeaseResponse* resp) {
  SawWorker(worker);
  jobs_->SweepEndedJobs();
  const double until = clock_->Now() + options_.lease_long_poll_seconds;
  std::unique_lock<std::mutex> lock(lease_mu_);
  while (true) {
    const double now = clock_->Now();
    ASSIGN_OR_RETURN(const bool leased, TryLease(worker, now, resp));
    if (leased) return absl::OkStatus();
    if (formed_.count(worker)) continue;  // this worker's gang formed just now
    if (now >= until || cancelled()) {
      resp->set_retry_after_seconds(0.1);
      return absl::OkStatus();
    }
    lock.unlock();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    lock.lock();
  }
}

absl::StatusOr<bool> LeaseManager::TryLease(const std::string& worker, double now,
                                            v1::LeaseResponse* resp) {
  auto mine = formed_.find(worker);
  if (mine != formed_.end()) {
    *resp->mutable_task() = mine->second;
    formed_.erase(mine);
    CountTask("leased");
    return true;
  }
  ASSIGN_OR_RETURN(const auto ready, state_->ReadyTasks(now, 16));
  for (const auto& [job_id, task_id] : ready) {
    ASSIGN_OR_RETURN(const JobRecord job, state_->GetJob(job_id));
    ASSIGN_OR_RETURN(const tasks::Task* task, jobs_->FindTask(job_id, task_id, job.spec_json));
    const int gang = task->gang;
    std::vector<std::string> members = {worker};
    if (gang > 1) {
      auto& forming = forming_[{job_id, task_id}];
      forming[worker] = now;
      for (auto it = forming.begin(); it != forming.end();) {
        it = now - it->second > options_.gang_forget_after_seconds ? forming.erase(it)
                                                                   : std::next(it);
      }
      if (static_cast<int>(forming.size()) < gang) break;  // wait for the rest of the gang
      members.clear();
      for (const auto& [w, seen] : forming) members.push_back(w);
      members.resize(gang);
    }
    std::string holders;
    for (const std::string& m : members) holders += (holders.empty() ? "" : ",") + m;
    ASSIGN_OR_RETURN(const std::optional<coordinator::Lease> lease,
                     state_->LeaseTaskById(holders, now, job_id, task_id));
    if (!lease.has_value()) continue;
    const coordinator::Lease& l = *lease;
    rendezvous_->DropTask(job_id, task_id);  // an earlier attempt's rendezvous ends with it
    v1::TaskLease t;
    t.set_job_id(l.job_id);
    t.set_task_id(l.task_id);
    t.set_epoch(l.epoch);
    t.set_name(l.name);
    t.set_spec_json(job.spec_json);
    // The task itself, its inputs' committed paths and this epoch's attempt: the worker runs
    // it as it is, without planning the job (DESIGN.md section 2).
    ASSIGN_OR_RETURN(const tasks::QuantizeJobSpec spec, tasks::SpecFromJson(job.spec_json));
    ASSIGN_OR_RETURN(const tasks::Plan* plan, jobs_->PlanOf(job_id, job.spec_json));
    const std::string job_dir = jobs_->JobDir(l.job_id);
    wire::LeasedTaskToProto(tasks::LeaseTask(*plan, *task, job_dir, spec.out_dir, l.epoch),
                            t.mutable_task());
    t.set_job_dir(job_dir);
    for (const std::string& root : options_.roots) t.add_roots(root);
    t.set_deadline_seconds(l.deadline - now);
    for (const std::string& m : members) t.add_gang(m);
    log_->Append(l.job_id, "coordinator",
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
      return false;  // this worker's lease is in formed_: the next look hands it out
    }
    *resp->mutable_task() = t;
    CountTask("leased");
    return true;
  }
  return false;
}

void LeaseManager::Heartbeat(const v1::HeartbeatRequest& req, v1::HeartbeatResponse* resp) {
  metrics::Default().GetCounter("quant_heartbeats_total", "Worker heartbeats.").Inc();
  const std::string& worker = req.worker_id();
  SawWorker(worker);
  const double now = clock_->Now();
  for (const v1::TaskLease& held : req.held()) {
    if (!Holds(held.job_id(), held.task_id(), worker) ||
        !state_->Heartbeat(held.job_id(), held.task_id(), held.epoch(), now).ok()) {
      resp->add_revoked_task_ids(held.task_id());  // stale epoch or cancelled job: stop it
    }
  }
  for (const v1::TaskProgress& p : req.progress()) {
    // Only a holder of the task's live lease, at that epoch, may report it; anything else is
    // dropped (not an error: a report may cross a revocation).
    absl::StatusOr<TaskRecord> task = state_->GetTask(p.job_id(), p.task_id());
    if (!task.ok() || task->status != TaskStatus::kLeased || task->epoch != p.epoch() ||
        !IsHolder(*task, worker) || p.phase().size() > 32) {
      continue;
    }
    v1::TaskProgress kept = p;
    kept.set_worker(worker);
    log_->ReportProgress(kept);
  }
}

absl::Status LeaseManager::Complete(const v1::CompleteRequest& req, v1::CompleteResponse* resp) {
  std::lock_guard<std::mutex> lock(lease_mu_);
  return CompleteLocked(req, resp);
}

absl::Status LeaseManager::CompleteLocked(const v1::CompleteRequest& req,
                                          v1::CompleteResponse* resp) {
  const double now = clock_->Now();
  const int64_t job_id = req.job_id(), task_id = req.task_id(), epoch = req.epoch();
  if (!Holds(job_id, task_id, req.worker_id())) {
    // Not (or no longer) a holder: a late worker whose lease passed to another gang, or a
    // worker naming a task it never held. Nothing of the task's state or outputs is touched.
    resp->set_committed(false);
    CountTask("stale");
    log_->Append(job_id, "coordinator",
                 absl::StrCat("task ", task_id, " epoch ", epoch, ": completion from ",
                              req.worker_id(), ", not a holder of its lease: discarded"));
    return absl::OkStatus();
  }
  // The job's spec and the task, read once for everything below.
  ASSIGN_OR_RETURN(const JobRecord job, state_->GetJob(job_id));
  ASSIGN_OR_RETURN(const tasks::Task* found, jobs_->FindTask(job_id, task_id, job.spec_json));
  const tasks::Task& task = *found;
  ASSIGN_OR_RETURN(const tasks::QuantizeJobSpec spec, tasks::SpecFromJson(job.spec_json));
  const tasks::TaskOutput output =
      tasks::TaskOutputPaths(jobs_->JobDir(job_id), spec.out_dir, task, epoch);
  absl::Status s;
  if (req.ok()) {
    // The epoch is checked (and the lease renewed) before the output is committed, and nothing
    // can lease the task between the check and the commit (lease_mu_).
    s = state_->Heartbeat(job_id, task_id, epoch, now);
    if (s.ok()) {
      if (task.gang > 1) {
        // A gang commits once every member's part is in the attempt.
        auto& done = gang_done_[{job_id, task_id, epoch}];
        if (req.rank() >= 0 && req.rank() < task.gang) done.insert(req.rank());
        if (static_cast<int>(done.size()) < task.gang) {
          resp->set_committed(true);  // accepted; the task commits with the last member
          return absl::OkStatus();
        }
        gang_done_.erase({job_id, task_id, epoch});
        rendezvous_->DropTask(job_id, task_id);
      }
      absl::Status commit = jobs_->CommitOutput(task, output);
      // An SLQ probe's table goes into the state with the commit: the solve reads it there.
      std::string result;
      if (commit.ok() && task.kind == tasks::TaskKind::kProbe) {
        absl::StatusOr<std::string> table =
            ReadWholeFile(output.committed + "/probes.json", "probe table");
        if (table.ok()) {
          result = *std::move(table);
        } else {
          commit = table.status();
        }
      }
      s = commit.ok()
              ? state_->CompleteTask(job_id, task_id, epoch, now, result)
              : state_->FailTask(job_id, task_id, epoch, std::string(commit.message()), now);
      if (s.ok() && commit.ok()) {
        if (task.kind == tasks::TaskKind::kProbe) jobs_->RememberProbeTable(job_id, task, result);
        // A commit may be the last dependency of a task the coordinator runs (SLQ's solve).
        jobs_->RunCoordinatorTasks();
      }
      if (s.ok() && !commit.ok()) {
        CountTask("failed");
        log_->Append(job_id, "coordinator", std::string(commit.message()));
        return absl::OkStatus();
      }
    }
  } else {
    s = state_->FailTask(job_id, task_id, epoch, req.error(), now);
    if (s.ok()) {
      rendezvous_->DropTask(job_id, task_id);
      gang_done_.erase({job_id, task_id, epoch});  // the attempt is over
    }
  }
  std::error_code ec;
  absl::StatusOr<JobRecord> after = state_->GetJob(job_id);
  if (s.code() == absl::StatusCode::kFailedPrecondition) {
    resp->set_committed(false);  // a stale attempt: its output is discarded
    CountTask("stale");
    log_->Append(job_id, req.worker_id(),
                 absl::StrCat("task ", task_id, " epoch ", epoch, ": stale completion discarded"));
    fs::remove_all(output.attempt, ec);
    if (after.ok() && after->status != JobStatus::kRunning) jobs_->CleanUpJob(job_id);
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(s);
  resp->set_committed(req.ok());
  CountTask(req.ok() ? "done" : "failed");
  log_->Append(job_id, req.worker_id(),
               absl::StrCat("task ", task_id, " epoch ", epoch,
                            req.ok() ? absl::StrCat(" committed (", req.seconds(), " s)")
                                     : " failed: " + req.error()));
  if (after.ok() && after->status != JobStatus::kRunning) {
    log_->Append(job_id, "coordinator",
                 absl::StrCat("job ", JobStatusName(after->status),
                              after->error.empty() ? "" : ": ", after->error));
    jobs_->CleanUpJob(job_id);
  }
  metrics::Default()
      .GetHistogram("quant_task_duration_seconds", "Task durations reported by workers.",
                    metrics::DurationBounds())
      .Observe(req.seconds());
  if (req.ok() && task.layer >= 0) {
    metrics::Default()
        .GetCounter("quant_layer_task_seconds_total",
                    "Seconds of committed tasks per layer (a gang task: its last member's).",
                    {{"layer", std::to_string(task.layer)}})
        .Inc(req.seconds());
  }
  return absl::OkStatus();
}

int LeaseManager::LiveWorkers() {
  std::lock_guard<std::mutex> lock(workers_mu_);
  int alive = 0;
  const double now = clock_->Now();
  for (const auto& [id, seen] : worker_seen_) alive += now - seen < options_.lease_seconds;
  return alive;
}

void LeaseManager::SawWorker(const std::string& worker) {
  std::lock_guard<std::mutex> lock(workers_mu_);
  worker_seen_[worker] = clock_->Now();
}

bool LeaseManager::Holds(int64_t job_id, int64_t task_id, const std::string& worker) {
  absl::StatusOr<TaskRecord> task = state_->GetTask(job_id, task_id);
  return task.ok() && IsHolder(*task, worker);
}

}  // namespace quant::coordinator
