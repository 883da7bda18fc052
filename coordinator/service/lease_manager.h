// Workers, leases and gangs: registration and liveness, leasing ready tasks (a long poll; a gang
// task goes out once enough workers ask together, each member with its rank), heartbeats that
// renew leases and carry progress, and completions that commit an attempt's output only for the
// lease's current epoch (a gang's once every member's part is in). Lease expiry itself is the
// state store's (an expired lease is released when ready tasks are next read).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "coordinator/service/clock.h"
#include "coordinator/service/job_log.h"
#include "coordinator/service/job_manager.h"
#include "coordinator/service/rendezvous_store.h"
#include "coordinator/service/service_options.h"
#include "coordinator/state/state_store.h"
#include "proto/quant.pb.h"

namespace quant::coordinator {

class LeaseManager {
 public:
  // Shares the state store, the job manager, the rendezvous store, the log and the clock (owned
  // by the caller, outliving this).
  LeaseManager(StateStore* state, JobManager* jobs, RendezvousStore* rendezvous, JobLog* log,
               const Clock* clock, const ServiceOptions& options);

  // A worker registered: the lease and heartbeat periods it is to keep.
  v1::RegisterResponse Register(const std::string& worker);
  // The next ready task for `worker` in `resp->task()`, waiting up to lease_long_poll_seconds
  // (`cancelled` is asked meanwhile); none: `resp->retry_after_seconds()`. A gang task waits
  // until its gang has formed from the workers asking and then goes to each of them.
  absl::Status Lease(const std::string& worker, const std::function<bool()>& cancelled,
                     v1::LeaseResponse* resp);
  // Renews the leases `req` holds and keeps the progress of those `worker` holds; a lease that
  // is not renewed (a stale epoch, a cancelled job, another holder) is named in revoked.
  void Heartbeat(const v1::HeartbeatRequest& req, v1::HeartbeatResponse* resp);
  // An attempt's end: ok commits its output (a gang's with its last member) if the lease is still
  // current, else the attempt failed (retried with backoff, or the job fails at the limit). A
  // completion from a non-holder or of a stale epoch is discarded (`committed` false).
  absl::Status Complete(const v1::CompleteRequest& req, v1::CompleteResponse* resp);

  // Workers heard from within one lease period.
  int LiveWorkers();

 private:
  void SawWorker(const std::string& worker);
  // Whether `worker` is (one of) the holder(s) recorded for the task: its current lease's gang,
  // or of a done task the gang that committed it (a late duplicate completion stays harmless).
  bool Holds(int64_t job_id, int64_t task_id, const std::string& worker);
  // One look for a task for `worker` at `now` (lease_mu_ held): true when `resp` has one.
  absl::StatusOr<bool> TryLease(const std::string& worker, double now, v1::LeaseResponse* resp);
  absl::Status CompleteLocked(const v1::CompleteRequest& req, v1::CompleteResponse* resp);

  StateStore* state_;
  JobManager* jobs_;
  RendezvousStore* rendezvous_;
  JobLog* log_;
  const Clock* clock_;
  const ServiceOptions options_;

  std::mutex workers_mu_;
  std::map<std::string, double> worker_seen_;  // worker id -> last call (under workers_mu_)
  // Lease and Complete hold lease_mu_: a lease cannot change hands between a completion's epoch
  // check and the commit of its output. It guards the gangs: workers waiting for a gang task,
  // with when each last asked; leases handed to a formed gang's members not yet picked up; the
  // ranks of a leased gang that are done (per job, task, epoch). In memory: after a restart a
  // gang's lease expires and the whole gang runs again.
  std::mutex lease_mu_;
  using TaskKey = std::pair<int64_t, int64_t>;
  std::map<TaskKey, std::map<std::string, double>> forming_;
  std::map<std::string, v1::TaskLease> formed_;
  std::map<std::tuple<int64_t, int64_t, int64_t>, std::set<int>> gang_done_;
};

}  // namespace quant::coordinator
