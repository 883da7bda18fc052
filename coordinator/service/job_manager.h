// Jobs: submission (the spec checked field by field, planned, estimated, stored), status, list,
// watch, logs and cancel; the job's plan (planned again from its stored spec after a restart);
// the commit rule (an attempt's output renamed to its committed place); and what ended jobs
// leave behind (their scratch, a cancelled job's checkpoint). Torch-free: the planner and the
// checkpoint's config are read without libtorch.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "coordinator/service/clock.h"
#include "coordinator/service/job_log.h"
#include "coordinator/service/service_options.h"
#include "coordinator/state/state_store.h"
#include "job/plan.h"
#include "storage/checkpoint.h"
#include "job/plan_input.h"
#include "proto/quant.pb.h"

namespace quant::coordinator {

class JobManager {
 public:
  // Shares `state`, `log` and `clock` (owned by the caller, outliving this).
  JobManager(StateStore* state, JobLog* log, const Clock* clock, const ServiceOptions& options);

  // Checks, plans and estimates `spec_json`; stores the job unless `dry_run`. The same client id
  // with the same fingerprint is the existing job (`resp->existing()`).
  absl::Status Submit(const std::string& client_id, const std::string& spec_json, bool dry_run,
                      v1::SubmitResponse* resp);
  // The job's state and counts; with `with_tasks` each task, with a running task's progress.
  absl::Status Status(int64_t job_id, bool with_tasks, v1::JobStatus* out);
  absl::Status List(v1::ListResponse* out);
  absl::Status Cancel(int64_t job_id);
  // Writes the job's status now and on every change of the done count, the leased or failed
  // tasks, their progress or the state, until the job ends, `write` returns false (the client
  // went away) or `cancelled` returns true. Woken by JobLog's change counter, or after a second
  // for what only time changes (a lease expiring, the ETA).
  absl::Status Watch(int64_t job_id, const std::function<bool()>& cancelled,
                     const std::function<bool(const v1::JobStatus&)>& write);
  // The job's log lines; NotFound for an unknown job.
  absl::Status Logs(int64_t job_id, v1::LogsResponse* out);

  // The job's plan, and one task of it (planned from `spec_json` once per process).
  absl::StatusOr<const tasks::Plan*> PlanOf(int64_t job_id, const std::string& spec_json);
  absl::StatusOr<const tasks::Task*> FindTask(int64_t job_id, int64_t task_id,
                                              const std::string& spec_json);
  // The job's scratch directory (its attempts and committed intermediate outputs).
  std::string JobDir(int64_t job_id) const;
  // The commit rule: renames the attempt's output to its committed place; a no-op when a
  // directory output is already there with the same content (a finished task run again).
  absl::Status CommitOutput(const tasks::Task& task, const tasks::TaskOutput& output);

  // Removes what an ended job leaves behind, once: its progress reports, its scratch (a
  // succeeded one's always, a failed or cancelled one's unless keep_failed_scratch) and, for a
  // cancelled job, the checkpoint its write task had committed at the output (it holds our
  // manifest: Submit refused an output that existed). Nothing for a running job.
  void CleanUpJob(int64_t job_id);
  // Runs the tasks the coordinator runs itself that are ready (SLQ's solve: every probe table
  // of the job, from the state, through job/slq_job.h's SolveSlq; the allocation is written to
  // the solve's committed output for the second pass's tasks and stored with the task). A
  // failed solve (an EAR target out of reach) fails the job with its message.
  void RunCoordinatorTasks();
  // A probe task's table as it commits: into the probe cache under the job's probe key.
  void RememberProbeTable(int64_t job_id, const tasks::Task& task, const std::string& table);
  // CleanUpJob on every job that is not running, at most every sweep_every_seconds.
  void SweepEndedJobs();
  // Sets the gauges of jobs and tasks by state.
  void RefreshGauges();

 private:
  StateStore* state_;
  JobLog* log_;
  const Clock* clock_;
  const ServiceOptions options_;
  std::mutex plans_mu_;  // guards plans_ (planning happens under it)
  std::map<int64_t, tasks::Plan> plans_;
  absl::Status Solve(int64_t job_id, int64_t task_id);
  // The job's probe cache key (job/slq_job.h's ProbeCacheKey), worked out once per process.
  absl::StatusOr<std::string> ProbeKeyOf(int64_t job_id);
  // The same from the job's spec and opened model (Submit has both), remembered.
  absl::StatusOr<std::string> ProbeKeyOf(int64_t job_id, const tasks::QuantizeJobSpec& spec,
                                         const storage::Checkpoint& checkpoint);
  std::mutex probe_keys_mu_;  // guards probe_keys_
  std::map<int64_t, std::string> probe_keys_;
  // A new SLQ job's probe tasks whose layer the probe cache covers are done from the cache.
  absl::Status TakeCachedProbes(int64_t job_id, const tasks::QuantizeJobSpec& spec,
                                const storage::Checkpoint& checkpoint, const tasks::Plan& plan);
  // The solve's allocation of an SLQ job, once stored, into `out`.
  absl::Status SlqStatus(const JobRecord& job, v1::JobStatus* out);
  std::mutex solve_mu_;        // one coordinator task at a time
  std::mutex cleaned_mu_;      // guards cleaned_ and last_sweep_
  std::set<int64_t> cleaned_;  // jobs already cleaned up
  double last_sweep_ = 0;
};

}  // namespace quant::coordinator
