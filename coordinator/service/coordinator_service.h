// The coordinator's gRPC services (proto/quant.proto) over its one state machine
// (coordinator/state): qctl submits, watches and cancels jobs; workers register, lease tasks,
// heartbeat and complete them. Every call checks the protocol version; Submit and Cancel need
// the bearer token when one is configured (constant-time compare); a submitted job's spec is
// parsed and checked field by field before anything is stored (job/job_spec.h).
// Torch-free: the planner and the checkpoint's config are read without libtorch.
#pragma once

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <tuple>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "coordinator/state/state_store.h"
#include "proto/quant.grpc.pb.h"
#include "job/plan.h"
#include "job/plan_input.h"

namespace quant::coordinator {

struct ServiceOptions {
  std::string token;        // submit/cancel bearer token; "" : no token required
  // How workers authenticate every Workers call (both may be set; either one suffices): a
  // worker token (a bearer token distinct from `token`), and/or with mTLS a client certificate
  // whose subject CN starts with `worker_cert_cn`. Both empty: workers are not checked (only
  // allowed when `token` is empty too: a loopback or test setup; main() enforces it).
  std::string worker_token;
  std::string worker_cert_cn;
  // file:// confinement: when not empty, every path a job names (model, out, calib, allocation)
  // must resolve, symlinks and ".." followed, inside one of these directories.
  std::vector<std::string> roots;
  double lease_seconds = 60;
  // Where jobs' intermediate outputs live (a directory per job), shared with the workers.
  std::string scratch;
  // A failed or cancelled job's scratch is removed when it ends unless this is set (debugging).
  bool keep_failed_scratch = false;
};

class CoordinatorService final : public v1::Jobs::Service, public v1::Workers::Service {
 public:
  CoordinatorService(StateStore* state, ServiceOptions options);

  grpc::Status Submit(grpc::ServerContext* ctx, const v1::SubmitRequest* req,
                      v1::SubmitResponse* resp) override;
  grpc::Status Status(grpc::ServerContext* ctx, const v1::JobRequest* req,
                      v1::JobStatus* resp) override;
  grpc::Status List(grpc::ServerContext* ctx, const v1::ListRequest* req,
                    v1::ListResponse* resp) override;
  grpc::Status Cancel(grpc::ServerContext* ctx, const v1::JobRequest* req,
                      v1::CancelResponse* resp) override;
  // A JobStatus (tasks included) now and on every change of the done count, the leased tasks or
  // the state, until the job ends or the client goes away.
  grpc::Status Watch(grpc::ServerContext* ctx, const v1::JobRequest* req,
                     grpc::ServerWriter<v1::JobStatus>* writer) override;
  // The job's log: submission, leases, completions and failures (with the workers' errors),
  // gang formations, commits. Kept in memory, the last kMaxLogLines per job.
  grpc::Status Logs(grpc::ServerContext* ctx, const v1::JobRequest* req,
                    v1::LogsResponse* resp) override;

  grpc::Status Register(grpc::ServerContext* ctx, const v1::RegisterRequest* req,
                        v1::RegisterResponse* resp) override;
  grpc::Status Lease(grpc::ServerContext* ctx, const v1::LeaseRequest* req,
                     v1::LeaseResponse* resp) override;
  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                         v1::HeartbeatResponse* resp) override;
  grpc::Status Complete(grpc::ServerContext* ctx, const v1::CompleteRequest* req,
                        v1::CompleteResponse* resp) override;
  grpc::Status StoreSet(grpc::ServerContext* ctx, const v1::StoreRequest* req,
                        v1::StoreResponse* resp) override;
  grpc::Status StoreGet(grpc::ServerContext* ctx, const v1::StoreRequest* req,
                        v1::StoreResponse* resp) override;

  // Sets the gauges of jobs and tasks by state and of live workers (before each scrape).
  void RefreshGauges();

  // Removes what ended jobs leave behind (CleanUpJob on every job that is not running).
  // Called at start-up and every few seconds from Lease: jobs also end by lease expiry.
  void SweepEndedJobs();

 private:
  grpc::Status CheckToken(grpc::ServerContext* ctx) const;
  // Authenticates a Workers call (worker token or worker certificate) and checks `worker_id`'s
  // form (1-128 bytes, printable, no commas).
  grpc::Status CheckWorker(grpc::ServerContext* ctx, const std::string& worker_id) const;
  // A rendezvous key "g/<job>/<task>/<epoch>/..." may be used only by a member of that task's
  // live gang attempt: the task is leased at that epoch and `worker` is one of its holders.
  grpc::Status CheckGangMember(const std::string& key, const std::string& worker);
  grpc::Status FillStatus(int64_t job_id, bool with_tasks, v1::JobStatus* out);
  std::string JobDir(int64_t job_id) const;
  // The job's plan (planned again from its stored spec after a restart).
  absl::StatusOr<const tasks::Plan*> PlanOf(int64_t job_id, const std::string& spec_json);
  absl::StatusOr<const tasks::Task*> FindTask(int64_t job_id, int64_t task_id,
                                              const std::string& spec_json);
  // Renames the attempt's output to its committed place; a no-op when a directory output is
  // already there (a finished task run again).
  absl::Status CommitOutput(const tasks::Task& task, const tasks::TaskOutput& output);

  StateStore* state_;
  ServiceOptions options_;
  std::mutex workers_mu_;
  std::map<std::string, double> worker_seen_;  // worker id -> last call (under workers_mu_)
  void SawWorker(const std::string& id);
  // Lease and Complete: a lease cannot change hands between a completion's epoch check and the
  // commit of its output.
  std::mutex lease_mu_;
  std::mutex plans_mu_;
  std::map<int64_t, tasks::Plan> plans_;
  // Gangs (under lease_mu_): workers waiting for a gang task, with when each last asked; leases
  // handed to a formed gang's members not yet picked up; the ranks of a leased gang that are
  // done (per job, task, epoch). In memory: after a restart a gang's lease expires and the
  // whole gang runs again.
  using TaskKey = std::pair<int64_t, int64_t>;
  std::map<TaskKey, std::map<std::string, double>> forming_;
  std::map<std::string, v1::TaskLease> formed_;
  std::map<std::tuple<int64_t, int64_t, int64_t>, std::set<int>> gang_done_;
  // The rendezvous store.
  std::mutex store_mu_;
  std::map<std::string, std::string> store_;
  void DropStoreKeys(int64_t job_id, int64_t task_id);
  static constexpr size_t kMaxStoreValueBytes = 64 << 10;
  static constexpr size_t kMaxStoreKeysPerAttempt = 256;
  static constexpr size_t kMaxStoreBytesPerAttempt = 4 << 20;
  // Whether `worker` is (one of) the holder(s) recorded for the task: its current lease's gang,
  // or of a done task the gang that committed it (a late duplicate completion stays harmless).
  bool Holds(int64_t job_id, int64_t task_id, const std::string& worker);
  // An ended job's scratch (a succeeded one's always, a failed or cancelled one's unless
  // keep_failed_scratch) and, for a cancelled job, the checkpoint its write task had committed
  // at the output (it holds our manifest: Submit refused an output that existed).
  void CleanUpJob(int64_t job_id);
  std::mutex cleaned_mu_;
  std::set<int64_t> cleaned_;  // jobs already cleaned up (under cleaned_mu_)
  double last_sweep_ = 0;      // under cleaned_mu_
  // Running tasks' progress as their holders last reported it (Heartbeat), shown by Status and
  // Watch while the task is leased at the reported epoch; in memory only, dropped at completion
  // and when the job is cleaned up.
  std::mutex progress_mu_;
  std::map<TaskKey, v1::TaskProgress> progress_;
  static constexpr size_t kMaxLogLines = 10000;
  void Log(int64_t job_id, const std::string& source, const std::string& text);
  std::mutex logs_mu_;
  std::map<int64_t, std::deque<v1::LogLine>> logs_;
  // Watch sleeps until something changes instead of polling: a counter bumped by every logged
  // change and progress report, and a condition variable.
  void NotifyChanged();
  uint64_t Changes();
  void WaitForChange(uint64_t seen, double max_seconds);
  std::mutex changes_mu_;
  std::condition_variable changed_;
  uint64_t changes_ = 0;
};

// Seconds on the coordinator's clock (monotonic within a process, wall time across restarts so
// that leases stored before a restart keep their meaning).
double Now();

}  // namespace quant::coordinator
