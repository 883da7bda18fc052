// The TaskIO of the scratch hand-off: a task reads the committed outputs of its inputs (the
// paths its lease names, job/plan_input.h) and writes its own into its attempt path, which the
// coordinator (or qctl's resumable run) commits by a rename. Files are safetensors saved bit
// for bit (task_state.h), so a task restored from them computes what it would in one process.
// A gang member writes its parts with the suffix "-r<rank>" and reads every member's.
// SLQ's probe pass hands off the probe windows' inputs (probe_inputs.safetensors: the windows,
// the original model's final-normed hidden states on them, their embeddings; made by the probe
// pass's first task at layer 0), the next layer's probe inputs (probe_hidden.safetensors, per
// propagate), each layer's probe table (probes.json) and the solve's allocation
// (allocation.json). No probe cache is read or written on this path.
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
  absl::Status SaveUnitReports(const Task& task, const JobState& job,
                               const std::vector<std::string>& names) override;
  absl::Status SaveLayerOutputs(const Task& task, const JobState& job) override;
  // The attempt; a crashed attempt of this epoch may have left a checkpoint there.
  WriteTarget WriteTargetOf(const Task&) const override { return {leased_.output.attempt, true}; }
  absl::StatusOr<std::string> WrittenDir(const Task& task) const override;
  std::string EvalReportPath(const Task&) const override { return leased_.output.attempt; }
  std::string PublishRecordPath(const Task&) const override { return leased_.output.attempt; }
  absl::Status LoadSlqState(const Task& task, JobState& job) override;
  absl::Status SaveSlqState(const Task& task, const JobState& job) override;

 private:
  // The committed outputs of the lease's inputs of `kind` at `layer`, in plan order.
  std::vector<std::string> InputsOf(TaskKind kind, int layer) const;
  // The one input of `kind` at `layer`; FailedPrecondition naming it when the lease has none.
  absl::StatusOr<std::string> InputOf(TaskKind kind, int layer) const;

  // Whether `task` is the probe pass's first at layer 0, which makes the probe windows' inputs
  // and reference (no probe-pass input of layer 0 holds them).
  bool MakesProbeInputs(const Task& task) const;
  // The committed output holding the probe inputs (probe_inputs.safetensors).
  absl::StatusOr<std::string> ProbeInputsDir() const;

  const LeasedTask& leased_;
};

}  // namespace quant::tasks
