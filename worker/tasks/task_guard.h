// The task boundary: whatever a task throws (a torch error, a CUDA or CPU out-of-memory, any
// std::exception) becomes one line naming the task, its layer and the error, so that qctl exits
// with it and a worker reports a failed attempt instead of crashing into an expired lease.
#pragma once

#include <functional>

#include "absl/status/status.h"
#include "job/plan.h"

namespace quant::tasks {

// Runs `body` for `task`. An error Status passes through with the task's name in front; an
// exception becomes ResourceExhausted (out of memory: torch's message names the bytes asked for
// and, on the GPU, those free) or Internal, its message cut to its first line (c10::Error's
// backtrace is left out).
//
// For tests of this boundary, QUANT_INJECT_TASK_FAILURE=KIND:TASK_NAME makes `body` fail in the
// named task: KIND `throw` raises a c10::Error, `oom` asks torch's allocator for 2^60 bytes (a
// real allocation failure). Unset (always, outside tests): nothing.
[[nodiscard]] absl::Status GuardTask(const Task& task, const std::function<absl::Status()>& body);

}  // namespace quant::tasks
