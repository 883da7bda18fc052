// What the planner needs of a job, read from the checkpoint's names and config (torch-free: the
// coordinator plans submitted jobs with it, and `qctl quantize` and quant-worker plan the very
// same list), and where each task's output lives.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "storage/checkpoint.h"
#include "storage/free_space.h"
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

// Where the job will write and how much, from the estimate: the checkpoint at its output (its
// attempt sits beside it), and with a work directory (the resumable runner of `qctl quantize`)
// every calibrated layer's hand-off state (`scratch_bytes` each: that runner keeps them all until
// the job succeeds; measured on tiny-qwen3-moe: 0.93 GB a layer against 1.02 GB estimated). An
// s3:// output is staged locally first: in the work directory, or without one under TMPDIR.
std::vector<storage::SpaceNeed> DiskNeeds(const JobEstimate& estimate, const Plan& plan,
                                          const QuantizeJobSpec& spec,
                                          const std::string& work_dir);

// The free-space preflight: opens the checkpoint (its index, headers and config.json only: what
// the estimate needs), estimates the job and checks DiskNeeds against statvfs of the nearest
// existing ancestor of each place. One line naming the path, the free and the needed bytes.
// `work_dir` "" : the in-memory runner (no hand-off state on disk); `work_dir_bytes` is what a
// resumed run's work directory already holds (counted against its need).
absl::Status CheckDiskSpace(const QuantizeJobSpec& spec, const std::string& work_dir,
                            uint64_t work_dir_bytes = 0,
                            const storage::StatvfsFn& statvfs_fn = {});

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

// A task as a worker runs it (DESIGN.md section 2: a lease carries the task; workers never
// re-plan): the task, the committed outputs of the tasks whose outputs it reads, and where this
// attempt writes. Made by the coordinator (and by `qctl quantize`'s resumable runner) from the
// plan; the worker gets it through the lease (proto/task_wire.h).
struct TaskInput {
  Task task;              // kind, layer, shard, shards, probe_pass of the task read
  std::string committed;  // its committed output
};
struct LeasedTask {
  Task task;
  std::vector<TaskInput> inputs;  // in plan order
  TaskOutput output;              // this attempt's and the committed path
};
// The tasks of `plan` whose committed outputs `task` reads: calibrate reads the previous layer's
// propagate (none for layer 0: the calibration windows); quantize its calibrate; GSQ its
// calibrate and quantize; propagate the previous layer's propagate and, for a layer with units,
// its calibrate, quantize and GSQ shards; write every layer's quantize, GSQ shards and
// propagate; evaluate and publish the write. Within one pass (probe_pass), except for SLQ's
// solve: it reads every probe task (a probe reads its layer's calibrate, the previous propagate
// and the probe pass's first task at layer 0, which makes the probe windows' reference), and
// the second pass's quantize, GSQ and write read the solve.
std::vector<Task> TaskInputsOf(const Plan& plan, const Task& task);
// `task` of `plan` with its inputs' committed paths and its attempt at `epoch`.
LeasedTask LeaseTask(const Plan& plan, const Task& task, const std::string& job_dir,
                     const std::string& out_dir, int64_t epoch);

}  // namespace quant::tasks
