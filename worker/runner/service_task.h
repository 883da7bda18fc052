// One planner task run by quant-worker (DESIGN.md section 4), as its lease names it: the one
// TaskRunner over the scratch hand-off (ScratchTaskIO): the task's inputs are restored from the
// committed outputs the lease lists (under the job's scratch directory) and its outputs are
// written to the attempt path that the coordinator commits. The job is never planned here.
#pragma once

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "worker/exchange/exchange.h"
#include "worker/tasks/layer_tasks.h"
#include "job/plan.h"
#include "job/plan_input.h"
#include "job/job_spec.h"

namespace quant::tasks {

// Runs `leased.task` (job/plan_input.h LeaseTask: its inputs' committed paths and its attempt)
// and writes its output to `leased.output.attempt` (a directory; a file for evaluate). A task
// opens only what it needs: publish the written checkpoint; evaluate the two models it
// compares; the others the model, and only the first layer's calibrate or propagate tokenizes
// the calibration text (the rest take the layer's inputs and window count from the hand-off).
// A gang task (task.gang > 1) needs `exchange`, this member's connection to the others: it holds
// only its own experts, forwards its share of the batches and writes its parts ("-r<rank>")
// into the attempt. SLQ's probe pass and solve are not run here yet.
// `hooks.should_stop` is asked at step boundaries (GSQ's steps): true stops the task with
// Cancelled, and the caller removes what the attempt wrote; `hooks.on_gsq_step` hears GSQ's
// progress.
absl::Status RunServiceTask(const QuantizeJobSpec& spec, const LeasedTask& leased,
                            exchange::Exchange* exchange = nullptr, TaskHooks hooks = {});

}  // namespace quant::tasks
