// GuardTask: c10::Error and std::exception turned into a Status at the task boundary.
#include "worker/tasks/task_guard.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <new>
#include <string>

#include "absl/strings/str_cat.h"

namespace quant::tasks {
namespace {

std::string FirstLine(std::string_view text) {
  const size_t end = text.find('\n');
  return std::string(text.substr(0, end));
}

std::string Where(const Task& task) {
  return task.layer >= 0 ? absl::StrCat(task.Name(), " (layer ", task.layer, ")") : task.Name();
}

void MaybeInjectFailure(const Task& task) {
  const char* inject = std::getenv("QUANT_INJECT_TASK_FAILURE");
  if (inject == nullptr) return;
  const std::string_view spec(inject);
  const size_t colon = spec.find(':');
  if (colon == std::string_view::npos || spec.substr(colon + 1) != task.Name()) return;
  if (spec.substr(0, colon) == "oom") {
    at::Tensor huge = at::empty({int64_t{1} << 60}, at::kByte);  // throws: not enough memory
    (void)huge;
  }
  TORCH_CHECK(false, "injected failure (QUANT_INJECT_TASK_FAILURE)");
}

}  // namespace

absl::Status GuardTask(const Task& task, const std::function<absl::Status()>& body) {
  try {
    MaybeInjectFailure(task);
    absl::Status s = body();
    if (s.ok()) return s;
    return absl::Status(s.code(), absl::StrCat(task.Name(), ": ", s.message()));
  } catch (const c10::Error& e) {
    const std::string what = FirstLine(e.what_without_backtrace());
    const bool oom = dynamic_cast<const c10::OutOfMemoryError*>(&e) != nullptr ||
                     what.find("not enough memory") != std::string::npos ||
                     what.find("can't allocate memory") != std::string::npos ||
                     what.find("out of memory") != std::string::npos;
    return oom ? absl::ResourceExhaustedError(
                     absl::StrCat(Where(task), ": out of memory: ", what))
               : absl::InternalError(absl::StrCat(Where(task), ": torch error: ", what));
  } catch (const std::bad_alloc& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat(Where(task), ": out of host memory (", e.what(), ")"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(Where(task), ": ", FirstLine(e.what())));
  } catch (...) {
    return absl::InternalError(absl::StrCat(Where(task), ": an unknown exception"));
  }
}

}  // namespace quant::tasks
