#include "worker/runner/service_task.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/runner/scratch_task_io.h"
#include "worker/runner/task_runner.h"

namespace quant::tasks {

absl::Status RunServiceTask(const QuantizeJobSpec& spec, const LeasedTask& leased,
                            exchange::Exchange* exchange, TaskHooks hooks) {
  const Task& task = leased.task;
  if (task.gang > 1 && (exchange == nullptr || exchange->size() != task.gang)) {
    return absl::FailedPreconditionError(
        absl::StrCat(task.Name(), ": needs a gang of ", task.gang, " connected"));
  }
  TaskRunner runner(spec, std::move(hooks));
  ScratchTaskIO io(leased);
  return runner.Run(task, io, exchange).status();
}

}  // namespace quant::tasks
