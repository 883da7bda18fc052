// quant-worker's loop: register with the coordinator, then lease tasks one at a time, heartbeat
// while one runs (renewing the lease, carrying its progress, hearing a revocation), run it as
// the lease names it (never re-planned) and report it complete or failed. It speaks to the
// coordinator only through CoordinatorClient and runs a task through an injected function (the
// real one is tasks::RunServiceTask), so its logic is unit-tested with FakeCoordinatorClient
// and a task that does no numerics (worker_loop_test.cc).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "job/job_spec.h"
#include "job/plan_input.h"
#include "worker/exchange/exchange.h"
#include "worker/service/coordinator_client.h"
#include "worker/runner/service_task.h"

namespace quant::worker {

struct WorkerOptions {
  std::string id;              // this worker's id, unique among the coordinator's workers
  std::string device = "cpu";  // what this worker offers (cpu or cuda)
  // Exit Run() after this many seconds without a task (0: never).
  double exit_when_idle_seconds = 0;
  // Register retries while the coordinator is unavailable (starting): this many, this far apart.
  int register_attempts = 60;
  double register_retry_seconds = 1;
};

// Runs one leased task (its spec, the task with its inputs and attempt, the gang's exchange or
// nullptr, the hooks that stop it and hear its progress): tasks::RunServiceTask in quant-worker.
using TaskFunction =
    std::function<absl::Status(const tasks::QuantizeJobSpec& spec, const tasks::LeasedTask& leased,
                               exchange::Exchange* exchange, tasks::TaskHooks hooks)>;
// Connects rank `rank` of a gang of `size` through `store` under `prefix` (Gloo, or NCCL on GPU
// workers).
using ConnectGangFunction = std::function<absl::StatusOr<std::unique_ptr<exchange::Exchange>>(
    exchange::RendezvousStore* store, const std::string& prefix, int rank, int size)>;

class WorkerLoop {
 public:
  // `client` outlives the loop.
  WorkerLoop(CoordinatorClient* client, WorkerOptions options, TaskFunction run_task,
             ConnectGangFunction connect_gang);

  // Registers (protocol version checked there), retrying while the coordinator is unavailable;
  // the heartbeat period comes from its answer.
  absl::Status Register();
  // Asks for one task and, if one comes, runs it and reports it: true. False when none came;
  // `*retry_after_seconds` is then how long to wait before asking again.
  bool RunOnce(double* retry_after_seconds = nullptr);
  // RunOnce until idle for exit_when_idle_seconds (forever when 0).
  void Run();

 private:
  // Runs the leased task; its result is what Complete reports.
  absl::Status RunLease(const v1::TaskLease& lease);
  void Log(const std::string& text) const;

  CoordinatorClient* client_;
  const WorkerOptions options_;
  const TaskFunction run_task_;
  const ConnectGangFunction connect_gang_;
  double heartbeat_seconds_ = 15;  // until Register says
};

}  // namespace quant::worker
