#include "worker/tasks/torch_profile.h"

#include <c10/util/Exception.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <cstdio>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/atomic_file.h"
#include "common/status.h"

namespace quant::tasks {
namespace {

namespace prof = torch::profiler::impl;

bool Readable(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  std::fclose(f);
  return true;
}

absl::Status Enable(const std::set<prof::ActivityType>& activities) {
  const prof::ProfilerConfig config(prof::ProfilerState::KINETO);
  try {
    torch::autograd::profiler::prepareProfiler(config, activities);
    torch::autograd::profiler::enableProfiler(config, activities);
  } catch (const c10::Error& e) {
    return absl::FailedPreconditionError(
        absl::StrCat("--profile: this libtorch cannot profile: ", e.what_without_backtrace()));
  }
  return absl::OkStatus();
}

// Stops the profiler and saves its trace to `path`; false where nothing was written.
bool DisableAndSave(const std::string& path) {
  try {
    std::unique_ptr<torch::autograd::profiler::ProfilerResult> result =
        torch::autograd::profiler::disableProfiler();
    if (result == nullptr) return false;
    result->save(path);
  } catch (const c10::Error&) {
    return false;
  }
  return Readable(path);  // Kineto reports a failed write only in its log
}

}  // namespace

absl::StatusOr<std::unique_ptr<TorchProfile>> TorchProfile::Start(const std::string& path,
                                                                  bool cuda) {
  std::set<prof::ActivityType> activities{prof::ActivityType::CPU};
  if (cuda) activities.insert(prof::ActivityType::CUDA);
  RETURN_IF_ERROR(Enable(activities));
  const std::string probe = absl::StrCat(path, ".probe");
  const bool saved = DisableAndSave(probe);
  std::remove(probe.c_str());
  if (!saved) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--profile: no trace could be written beside ", path,
        " (an unwritable directory, or a libtorch without the Kineto profiler: Debian's has "
        "none, the pip torch has it)"));
  }
  RETURN_IF_ERROR(Enable(activities));
  std::unique_ptr<TorchProfile> p(new TorchProfile());
  p->running_ = true;
  return p;
}

TorchProfile::~TorchProfile() {
  if (running_) {
    try {
      torch::autograd::profiler::disableProfiler();
    } catch (const c10::Error&) {
      // Leaving: nothing to save.
    }
  }
}

absl::Status TorchProfile::Save(const std::string& path) {
  if (!running_) return absl::FailedPreconditionError("--profile: the profiler is not running");
  running_ = false;
  const std::string tmp = absl::StrCat(path, ".tmp");
  // The profiler writes the file itself; its rename follows the one rule (common/atomic_file.h).
  if (!DisableAndSave(tmp) || !RenameDurably(tmp, path).ok()) {
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat("--profile: cannot write ", path));
  }
  return absl::OkStatus();
}

}  // namespace quant::tasks
