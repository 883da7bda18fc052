// The torch (Kineto) profiler around a job: CPU operators and, on CUDA, every kernel and copy,
// with the job's layer tasks, the write and the evaluation as user scopes (ProfileScope). Saved as a
// Chrome trace (chrome://tracing, Perfetto); bench/trace_summary.py sums it per task phase and
// per kernel.
#pragma once

#include <ATen/record_function.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace quant::tasks {

class TorchProfile {
 public:
  // Starts recording for a trace to be saved at `path`; `cuda` adds the GPU activities
  // (kernels, copies, their launches). Fails at once where this libtorch cannot write a trace
  // (Debian's is built without Kineto): an empty session is saved beside `path` first.
  static absl::StatusOr<std::unique_ptr<TorchProfile>> Start(const std::string& path, bool cuda);
  ~TorchProfile();
  TorchProfile(const TorchProfile&) = delete;
  TorchProfile& operator=(const TorchProfile&) = delete;

  // Stops recording and writes the trace to `path` (through a temporary file, renamed in).
  absl::Status Save(const std::string& path);

 private:
  TorchProfile() = default;
  bool running_ = false;
};

// A named user scope in a --profile trace (free when no profiler runs), from construction to
// End() or destruction.
class ProfileScope {
 public:
  explicit ProfileScope(const std::string& name) : rf_(at::RecordScope::USER_SCOPE) {
    if (rf_.isActive()) rf_.before(name, c10::ArrayRef<const c10::IValue>{});
  }
  void End() { rf_.end(); }

 private:
  at::RecordFunction rf_;
};

}  // namespace quant::tasks
