// The coordinator's durable state (DESIGN.md section 8): jobs, their planned tasks with
// dependencies, leases with epochs, attempts and backoff, in one SQLite database (WAL). This
// class is the one state machine that owns the tables: every change is one transaction, calls
// are serialised, and nothing else writes the file. Torch-free; time is passed in (seconds on
// any monotonic-enough clock the caller chooses), so tests drive it with a fake clock.
//
// Task life: pending -> leased (epoch + 1, deadline) -> done, or back to pending when the lease
// expires or the attempt fails (with exponential backoff), or failed once attempts reach the
// limit, which fails the job with that task's last error. A completion or heartbeat that carries
// an older epoch than the task's is refused: a worker that comes back late can never commit over
// a newer attempt. Locking: each public call holds this store's one mutex (the connection is
// shared by the coordinator's threads, and a transaction must not interleave with another's
// statements); it calls nothing outside, so any caller may hold its own lock while calling it. A job is identified by its client id: submitting the same id with the same
// fingerprint returns the existing job; with another fingerprint it is refused.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "job/plan.h"

struct sqlite3;

namespace quant::coordinator {

enum class JobStatus { kRunning, kSucceeded, kFailed, kCancelled };
enum class TaskStatus { kPending, kLeased, kDone, kFailed };
const char* JobStatusName(JobStatus s);
const char* TaskStatusName(TaskStatus s);

struct StateOptions {
  double lease_seconds = 60;      // a lease not renewed by a heartbeat for this long expires
  int max_attempts = 3;           // failed or expired attempts before the job fails
  double backoff_seconds = 2;     // first retry waits this long, doubling per attempt
};

struct JobRecord {
  int64_t id = 0;
  std::string client_id;
  std::string fingerprint;
  std::string spec_json;
  JobStatus status = JobStatus::kRunning;
  std::string error;
  int64_t tasks_total = 0;
  int64_t tasks_done = 0;
};

struct TaskRecord {
  int64_t job_id = 0;
  int64_t task_id = 0;     // the planner's id, unique within the job
  std::string name;        // "L3/gsq[1/4]"
  std::string kind;        // "gsq"
  int layer = -1;
  TaskStatus status = TaskStatus::kPending;
  int64_t epoch = 0;       // bumped by every lease
  int attempts = 0;        // failed or expired attempts so far
  int64_t executions = 0;  // leases granted (what the durability tests count)
  std::string worker;      // holder of the current lease; of a done task, who committed it
  double deadline = 0;     // lease expiry
  double not_before = 0;   // backoff: not leased before this time
  std::string last_error;
};

// Whether `worker` is one of the task's recorded holders (a gang's are comma-separated).
bool IsHolder(const TaskRecord& task, const std::string& worker);

struct Lease {
  int64_t job_id = 0;
  int64_t task_id = 0;
  int64_t epoch = 0;
  std::string name;
  std::string kind;
  int layer = -1;
  double deadline = 0;
};

class StateStore {
 public:
  // Opens (creating if needed) the database at `path`; ":memory:" for tests without a file.
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(const std::string& path,
                                                          const StateOptions& options = {});
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  // A new job with the plan's tasks, or the existing job of this client id (same fingerprint);
  // AlreadyExists when the id was used with another fingerprint.
  absl::StatusOr<int64_t> SubmitJob(const std::string& client_id, const std::string& fingerprint,
                                    const std::string& spec_json, const tasks::Plan& plan);

  // The next task whose dependencies are done, of a running job, not in backoff; nullopt when
  // none is ready. Expired leases are released first.
  absl::StatusOr<std::optional<Lease>> LeaseTask(const std::string& worker, double now);
  // The same for one given task only (nullopt when that task is not ready).
  absl::StatusOr<std::optional<Lease>> LeaseTaskById(const std::string& worker, double now,
                                                     int64_t job_id, int64_t task_id);
  // Ready tasks (as LeaseTask would pick them, in its order), at most `limit`, leasing none:
  // (job_id, task_id) pairs.
  absl::StatusOr<std::vector<std::pair<int64_t, int64_t>>> ReadyTasks(double now, int limit);

  // Renews the lease; FailedPrecondition when the epoch is stale or the task is not leased.
  absl::Status Heartbeat(int64_t job_id, int64_t task_id, int64_t epoch, double now);

  // Commits the task; FailedPrecondition (nothing changes) when the epoch is stale. A non-empty
  // `result` (an SLQ probe table) is stored with the commit, in the same transaction.
  absl::Status CompleteTask(int64_t job_id, int64_t task_id, int64_t epoch, double now,
                            const std::string& result = "");

  // Tasks the coordinator runs itself (SLQ's solve), ready as LeaseTask would see them; workers
  // are never leased them.
  absl::StatusOr<std::vector<std::pair<int64_t, int64_t>>> ReadyCoordinatorTasks(double now);
  // Ends a pending task without a worker: done with its `result` stored, or (a non-empty
  // `error`) failed with its job. `by` is recorded as its worker: "coordinator" (it ran here,
  // one execution) or "probe cache" (an SLQ probe whose table was cached: no execution).
  // FailedPrecondition when the task is not pending (another thread finished it).
  absl::Status FinishCoordinatorTask(int64_t job_id, int64_t task_id, const std::string& result,
                                     const std::string& error = "",
                                     const std::string& by = "coordinator");
  // SLQ's probe cache, kept across jobs: a layer's probe table under the key of what the
  // scores depend on (job/slq_job.h's ProbeCacheKey), and every layer's table of a key.
  absl::Status PutProbeCache(const std::string& key, int layer, const std::string& result);
  absl::StatusOr<std::map<int, std::string>> ProbeCache(const std::string& key);
  // The stored results of a job's tasks, by task id.
  absl::StatusOr<std::map<int64_t, std::string>> TaskResults(int64_t job_id);

  // The attempt failed: back to pending with backoff, or the task and its job fail at the limit.
  absl::Status FailTask(int64_t job_id, int64_t task_id, int64_t epoch, const std::string& error,
                        double now);

  // Releases every lease past its deadline (counted as a failed attempt). Returns how many.
  absl::StatusOr<int> ExpireLeases(double now);

  absl::Status CancelJob(int64_t job_id);

  absl::StatusOr<JobRecord> GetJob(int64_t job_id);
  absl::StatusOr<std::vector<JobRecord>> ListJobs();
  absl::StatusOr<std::vector<TaskRecord>> Tasks(int64_t job_id);
  absl::StatusOr<TaskRecord> GetTask(int64_t job_id, int64_t task_id);

 private:
  StateStore(sqlite3* db, const StateOptions& options) : db_(db), options_(options) {}
  absl::Status Exec(const std::string& sql);
  absl::Status FailAttempt(int64_t job_id, int64_t task_id, const std::string& error, double now);
  absl::Status MaybeFinishJob(int64_t job_id);
  absl::Status PutResult(int64_t job_id, int64_t task_id, const std::string& result);
  // The next ready task (job_id < 0), or that one task, leased to `worker`.
  absl::StatusOr<std::optional<Lease>> LeaseReady(const std::string& worker, double now,
                                                  int64_t job_id, int64_t task_id);

  sqlite3* db_ = nullptr;
  StateOptions options_;
  std::mutex mu_;  // serialises every public call on db_ (see the locking note above)
};

}  // namespace quant::coordinator
