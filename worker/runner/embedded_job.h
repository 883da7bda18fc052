// `qctl quantize` in memory: the planner's tasks run by one TaskRunner over a MemoryTaskIO in
// this process (the job's state stays in memory from task to task), write, evaluate and publish
// included. SLQ's probe pass and jobs with --expert-shards above 1 take this path; the others
// take the resumable one (resumable_job.h), the same runner over the scratch hand-off.
#pragma once

#include "absl/status/statusor.h"
#include "job/job_spec.h"
#include "job/slq_tables.h"
#include "worker/tasks/job_result.h"

namespace quant::tasks {

// Checks every field (and the files it names) without running anything heavy.
absl::Status ValidateSpec(const QuantizeJobSpec& spec);

// `solve`: SLQ's knapsack (null: job/slq_solver.h's SolveTables).
absl::StatusOr<QuantizeJobResult> RunQuantizeJob(const QuantizeJobSpec& spec,
                                                 const ProgressFn& progress,
                                                 const SlqSolveFn& solve = nullptr);

}  // namespace quant::tasks
