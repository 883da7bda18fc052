// The one TaskRunner (DESIGN.md section 2): every task kind of the planner (calibrate, probe,
// solve, quantize, GSQ, propagate, write, evaluate, publish) run by the same code for
// `qctl quantize` and for quant-worker; only the TaskIO differs (memory_task_io.h in one
// process, scratch_task_io.h across processes).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "job/job_spec.h"
#include "job/plan.h"
#include "job/slq_tables.h"
#include "worker/eval/eval_job.h"
#include "worker/exchange/exchange.h"
#include "worker/quant/export.h"
#include "worker/runner/task_io.h"
#include "worker/tasks/layer_tasks.h"

namespace quant::tasks {

// What a job-level task gives its driver besides the files it wrote.
struct TaskOutcome {
  std::optional<quant::ExportStats> written;      // the write task's
  std::optional<eval::EvalJobResult> evaluated;   // the evaluate task's
  int64_t uploaded_bytes = 0;                     // the publish task's
};

// The phase a task's time counts to (qctl's table, report.json, progress events): "probe",
// "solve", "calibrate", "rtn" or "gptq", "gsq", "propagate", "write", "eval", "publish".
std::string PhaseOf(const Task& task, const QuantizeJobSpec& spec);

class TaskRunner {
 public:
  // `hooks`: asked at step boundaries and told of progress (TaskHooks); `solve`: SLQ's
  // knapsack (null: job/slq_solver.h's SolveTables).
  TaskRunner(QuantizeJobSpec spec, TaskHooks hooks, SlqSolveFn solve = nullptr);
  ~TaskRunner();

  // Opens the job (OpenJob: the model's index, headers and config) if not yet open. Tasks that
  // need the model call it themselves; evaluate and publish never do.
  absl::Status Open();

  // Runs `task`, its inputs from `io` and its outputs to it. A gang task (task.gang > 1) uses
  // `exchange`, this member's connection to the others, when one is given: it then holds only
  // its own experts and forwards its share of the batches; without one, this process runs the
  // whole layer. Evaluate is told of its progress through hooks.on_eval_progress.
  absl::StatusOr<TaskOutcome> Run(const Task& task, TaskIO& io,
                                  exchange::Exchange* exchange = nullptr);

  // The job's state: the model, and in memory what the tasks so far left (MemoryTaskIO).
  JobState& job() { return job_; }

 private:
  absl::Status RunLayerTask(const Task& task, TaskIO& io, exchange::Exchange* exchange);
  absl::StatusOr<TaskOutcome> Write(const Task& task, TaskIO& io);
  absl::StatusOr<TaskOutcome> Evaluate(const Task& task, TaskIO& io);
  absl::StatusOr<TaskOutcome> Publish(const Task& task, TaskIO& io);

  QuantizeJobSpec spec_;
  SlqSolveFn solve_;
  JobState job_;
  bool open_ = false;
};

}  // namespace quant::tasks
