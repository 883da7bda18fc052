// The in-memory TaskIO of `qctl quantize`: the job's state (JobState) lives in the one
// TaskRunner of the job, so what passes between tasks is already where the next task looks for
// it: the layer's inputs are replaced in place by each propagate, the calibration stays in
// job.layer, the units gather in job.units. The checkpoint is written to the output, or to a
// local staging directory that the publish task uploads to an s3:// output.
#pragma once

#include <string>

#include "worker/runner/task_io.h"

namespace quant::tasks {

class MemoryTaskIO : public TaskIO {
 public:
  // `job`: the runner's state (read to check that a task's inputs are the ones held);
  // `write_dir`: where the checkpoint goes (the output, or a staging directory);
  // `timings`: the driver's record of finished tasks (for report.json), may be null.
  MemoryTaskIO(const JobState& job, std::string write_dir, bool overwrite,
               const QuantizeJobResult* timings)
      : job_(job), write_dir_(std::move(write_dir)), overwrite_(overwrite), timings_(timings) {}

  absl::Status LoadLayerInputs(const Task& task, JobState& job) override;
  bool HasCalibration(const Task& task) const override;
  absl::Status LoadCalibration(const Task& task, JobState& job) override;
  absl::Status LoadUnits(const Task&, TaskKind, JobState&) override { return absl::OkStatus(); }
  absl::Status SaveCalibration(const Task&, const JobState&,
                               const std::function<bool(const std::string&)>&) override {
    return absl::OkStatus();
  }
  absl::Status SaveUnits(const Task&, const JobState&, const std::vector<std::string>&) override {
    return absl::OkStatus();
  }
  absl::Status SaveUnitReports(const Task&, const JobState&,
                               const std::vector<std::string>&) override {
    return absl::OkStatus();
  }
  absl::Status SaveLayerOutputs(const Task&, const JobState&) override { return absl::OkStatus(); }
  WriteTarget WriteTargetOf(const Task&) const override { return {write_dir_, overwrite_}; }
  absl::StatusOr<std::string> WrittenDir(const Task&) const override { return write_dir_; }
  std::string EvalReportPath(const Task&) const override { return write_dir_ + "/report.json"; }
  std::string PublishRecordPath(const Task&) const override { return ""; }
  // StartProbePass (the driver's) made the probe pass's state; it stays in job.
  absl::Status LoadSlqState(const Task&, JobState&) override { return absl::OkStatus(); }
  absl::Status SaveSlqState(const Task&, const JobState&) override { return absl::OkStatus(); }
  const QuantizeJobResult* Timings() const override { return timings_; }

 private:
  const JobState& job_;
  std::string write_dir_;
  bool overwrite_;
  const QuantizeJobResult* timings_;
};

}  // namespace quant::tasks
