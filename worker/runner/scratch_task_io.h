// The TaskIO of the scratch hand-off: a task reads the committed outputs of its inputs (the
// paths its lease names, job/plan_input.h) and writes its own into its attempt path, which the
// coordinator (or qctl's resumable run) commits by a rename. Files are safetensors saved bit
// for bit (task_state.h), so a task restored from them computes what it would in one process.
// A gang member writes its parts with the suffix "-r<rank>" and reads every member's.
#pragma once

#include <string>

#include "job/plan_input.h"
#include "worker/runner/task_io.h"

namespace quant::tasks {

class ScratchTaskIO : public TaskIO {
 public:
  explicit ScratchTaskIO(const LeasedTask& leased) : leased_(leased) {}

  absl::Status LoadLayerInputs(const Task& task, JobState& job) override;
  bool HasCalibration(const Task& task) const override;
  absl::Status LoadCalibration(const Task& task, JobState& job) override;
  absl::Status LoadUnits(const Task& task, TaskKind kind, JobState& job) override;
  absl::Status SaveCalibration(const Task& task, const JobState& job,
                               const std::function<bool(const std::string&)>& keep) override;
  absl::Status SaveUnits(const Task& task, const JobState& job,
                         const std::vector<std::string>& names) override;
  absl::Status SaveLayerOutputs(const Task& task, const JobState& job) override;
  // The attempt; a crashed attempt of this epoch may have left a checkpoint there.
  WriteTarget WriteTargetOf(const Task&) const override { return {leased_.output.attempt, true}; }
  absl::StatusOr<std::string> WrittenDir(const Task& task) const override;
  std::string EvalReportPath(const Task&) const override { return leased_.output.attempt; }
  std::string PublishRecordPath(const Task&) const override { return leased_.output.attempt; }
  absl::Status CanRunProbePass(const Task& task) const override;

 private:
  // The committed outputs of the lease's inputs of `kind` at `layer`, in plan order.
  std::vector<std::string> InputsOf(TaskKind kind, int layer) const;
  // The one input of `kind` at `layer`; FailedPrecondition naming it when the lease has none.
  absl::StatusOr<std::string> InputOf(TaskKind kind, int layer) const;

  const LeasedTask& leased_;
};

}  // namespace quant::tasks
