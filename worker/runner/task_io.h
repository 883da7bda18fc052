// Where a task's inputs come from and where its outputs go (DESIGN.md section 2, runner/). The
// one TaskRunner asks a TaskIO for everything that passes between tasks, so the same task code
// runs in one process (MemoryTaskIO: the job's state stays in memory from task to task) and
// across processes (ScratchTaskIO: safetensors hand-off files under the job's scratch, which the
// coordinator, or qctl's resumable run, commits by a rename).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "job/plan.h"
#include "worker/tasks/job_result.h"
#include "worker/tasks/layer_tasks.h"

namespace quant::tasks {

class TaskIO {
 public:
  virtual ~TaskIO() = default;

  // --- Inputs of a layer task (task.layer >= 0) ---
  // The layer's inputs into job.hidden (this gang member's batches, job.gang says which) and
  // job.windows: for layer 0 the calibration windows' embeddings, else what the previous
  // layer's propagate made.
  virtual absl::Status LoadLayerInputs(const Task& task, JobState& job) = 0;
  // Whether task.layer was calibrated: it has in-scope units (its propagate then runs the
  // quantized layer).
  virtual bool HasCalibration(const Task& task) const = 0;
  // task.layer's calibration (Hessians, the experts' tokens and targets) into job.layer.
  virtual absl::Status LoadCalibration(const Task& task, JobState& job) = 0;
  // The units (with their reports and fallback experts) that the tasks of `kind` made for
  // task.layer into job.units; for the write task every layer's units as the quantize and GSQ
  // tasks made them, with the reports as propagate completed them (`kind` is not used).
  virtual absl::Status LoadUnits(const Task& task, TaskKind kind, JobState& job) = 0;

  // --- Outputs of a layer task ---
  // The layer's calibration; `keep` (null: all) accepts the statistics' keys to keep.
  virtual absl::Status SaveCalibration(const Task& task, const JobState& job,
                                       const std::function<bool(const std::string&)>& keep) = 0;
  // Units `names` (full tensor names) of job.units with their reports.
  virtual absl::Status SaveUnits(const Task& task, const JobState& job,
                                 const std::vector<std::string>& names) = 0;
  // The reports of units `names` only (propagate's proxy losses; the units themselves are the
  // quantize and GSQ tasks' outputs, which the write task reads).
  virtual absl::Status SaveUnitReports(const Task& task, const JobState& job,
                                       const std::vector<std::string>& names) = 0;
  // job.hidden (this member's batches): the next layer's inputs.
  virtual absl::Status SaveLayerOutputs(const Task& task, const JobState& job) = 0;

  // --- The job-level tasks: write, evaluate, publish ---
  struct WriteTarget {
    std::string dir;         // where the write task exports the checkpoint
    bool overwrite = false;  // an existing checkpoint of ours there may be replaced
  };
  virtual WriteTarget WriteTargetOf(const Task& task) const = 0;
  // The checkpoint the write task made (the evaluate and publish tasks' input).
  virtual absl::StatusOr<std::string> WrittenDir(const Task& task) const = 0;
  // Where the evaluate task writes the report (the write task's, with the evaluation added).
  virtual std::string EvalReportPath(const Task& task) const = 0;
  // Where the publish task records what it uploaded ("": nowhere).
  virtual std::string PublishRecordPath(const Task& task) const = 0;

  // --- SLQ (spec.slq) ---
  // What the job's SLQ tasks share, before a task runs: for the probe pass and the solve the
  // units and their sizes; for a probe-pass task the probe windows' inputs at its layer (and
  // for a probe the original model's reference on them); for the solve every probe table; for
  // the second pass's quantize, GSQ and write the solve's allocation.
  virtual absl::Status LoadSlqState(const Task& task, JobState& job) = 0;
  // After a probe-pass propagate (the probe windows' inputs of the next layer), a probe (the
  // layer's probe table) and the solve (the allocation).
  virtual absl::Status SaveSlqState(const Task& task, const JobState& job) = 0;

  // The tasks finished so far with their times, for report.json; null: none known here.
  virtual const QuantizeJobResult* Timings() const { return nullptr; }
};

}  // namespace quant::tasks
