// What the planner needs of a job, read from the checkpoint's names and config (torch-free: the
// coordinator plans submitted jobs with it, and `qctl quantize` and quant-worker plan the very
// same list), and where each task's output lives.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "storage/checkpoint.h"
#include "job/model_config.h"
#include "job/plan.h"
#include "job/job_spec.h"
#include "job/slq_tables.h"

namespace quant::tasks {

// The planner's input for `spec` on this checkpoint: layers with in-scope linears, MoE layers,
// GSQ, SLQ, evaluation and the expert shards.
absl::StatusOr<PlanInput> PlanInputFor(const storage::Checkpoint& checkpoint,
                                       const model::ModelConfig& config,
                                       const QuantizeJobSpec& spec);

// The preflight estimate of `qctl submit --dry-run` (a model, not a measurement; its terms are in
// docs/operations.md): the peak memory of one worker over the job's task kinds, the quantized
// checkpoint's bytes, the scratch's peak (one layer's handoff state), and the GSQ matmul work of
// one worker, turned into seconds at `assumed_tflops`.
struct JobEstimate {
  uint64_t worker_memory_bytes = 0;
  uint64_t output_bytes = 0;
  uint64_t scratch_bytes = 0;
  double gsq_tflop_per_worker = 0;
  double seconds_per_worker = 0;
  double assumed_tflops = 0;
  std::string peak_task;  // which task kind sets the memory peak
};
JobEstimate EstimateJob(const storage::Checkpoint& checkpoint, const model::ModelConfig& config,
                        const QuantizeJobSpec& spec);

// Opens the checkpoint and plans the job (what the coordinator and the workers both call).
absl::StatusOr<Plan> PlanJob(const QuantizeJobSpec& spec);

// A service task's output (DESIGN.md section 8): an attempt writes `attempt`; the coordinator
// commits it by renaming it to `committed`, only for the lease's current epoch. Layer tasks'
// outputs are directories under the job's scratch directory; write's is the checkpoint itself
// (LocalOutDir) and evaluate's the report.json inside it; publish's a record of the upload.
struct TaskOutput {
  std::string attempt;
  std::string committed;
};
// Where the write task puts the checkpoint: out_dir itself, or `<job_dir>/out` when out_dir is
// an s3:// prefix (the publish task uploads it from there).
std::string LocalOutDir(const std::string& job_dir, const std::string& out_dir);
TaskOutput TaskOutputPaths(const std::string& job_dir, const std::string& out_dir,
                           const Task& task, int64_t epoch);
// "L3-calibrate", "L3-gsq-1-of-4", "write": the task's directory name under the job's scratch.
std::string TaskDirName(const Task& task);

}  // namespace quant::tasks
