// One planner task run by quant-worker (DESIGN.md section 4): the task's inputs are restored
// from the committed outputs of the tasks it depends on (under the job's scratch directory),
// the same task function as `qctl quantize` runs is called, and the outputs are written to the
// attempt path that the coordinator commits (plan_input.h TaskOutputPaths).
#pragma once

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "worker/exchange/exchange.h"
#include "worker/tasks/layer_tasks.h"
#include "job/plan.h"
#include "worker/tasks/quantize_job.h"

namespace quant::tasks {

// `job_dir`: the job's scratch directory (committed outputs); `attempt`: where this attempt
// writes (a directory; a file for evaluate). A gang task (task.gang > 1) needs `exchange`, this
// member's connection to the others: it holds only its own experts, forwards its share of the
// batches and writes its parts ("-r<rank>") into the attempt. SLQ's probe pass and solve are
// not run here yet.
// `plan` is the job's (PlanJob), `task` one of its tasks.
// `hooks.should_stop` is asked at step boundaries (GSQ's steps): true stops the task with
// Cancelled, and the caller removes what the attempt wrote; `hooks.on_gsq_step` hears GSQ's
// progress.
absl::Status RunServiceTask(const QuantizeJobSpec& spec, const Plan& plan, const Task& task,
                            const std::string& job_dir, const std::string& attempt,
                            exchange::Exchange* exchange = nullptr, TaskHooks hooks = {});

}  // namespace quant::tasks
