#include "worker/runner/memory_task_io.h"

#include "absl/strings/str_cat.h"

namespace quant::tasks {

absl::Status MemoryTaskIO::LoadLayerInputs(const Task& task, JobState& job) {
  if (job.hidden.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(task.Name(), ": no inputs of the layer are held in memory"));
  }
  return absl::OkStatus();
}

bool MemoryTaskIO::HasCalibration(const Task& task) const {
  return job_.layer.index == task.layer && job_.layer.capture != nullptr;
}

absl::Status MemoryTaskIO::LoadCalibration(const Task& task, JobState&) {
  if (!HasCalibration(task)) {
    return absl::FailedPreconditionError(absl::StrCat(
        task.Name(), ": the calibration held in memory is not layer ", task.layer, "'s"));
  }
  return absl::OkStatus();
}

}  // namespace quant::tasks
