// The gang-scoped rendezvous store (see rendezvous_store.h).
#include "coordinator/service/rendezvous_store.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace quant::coordinator {

RendezvousStore::RendezvousStore(StateStore* state, const ServiceOptions& options)
    : state_(state),
      max_value_bytes_(options.rendezvous_max_value_bytes),
      max_keys_per_attempt_(options.rendezvous_max_keys_per_attempt),
      max_bytes_per_attempt_(options.rendezvous_max_bytes_per_attempt) {}

absl::StatusOr<std::string> RendezvousStore::CheckMember(const std::string& key,
                                                         const std::string& worker) {
  // "g/<job>/<task>/<epoch>/<rest>"
  const std::vector<std::string> parts = absl::StrSplit(key, absl::MaxSplits('/', 4));
  int64_t job_id = 0, task_id = 0, epoch = 0;
  if (parts.size() != 5 || parts[0] != "g" || !absl::SimpleAtoi(parts[1], &job_id) ||
      !absl::SimpleAtoi(parts[2], &task_id) || !absl::SimpleAtoi(parts[3], &epoch) ||
      key.size() > 256) {
    return absl::InvalidArgumentError(
        "rendezvous key must be g/<job>/<task>/<epoch>/... (at most 256 bytes)");
  }
  absl::StatusOr<TaskRecord> task = state_->GetTask(job_id, task_id);
  if (!task.ok() || task->status != TaskStatus::kLeased || task->epoch != epoch ||
      !IsHolder(*task, worker)) {
    return absl::PermissionDeniedError(
        absl::StrCat("rendezvous: ", worker, " is not a member of a live attempt ", "of job ",
                     job_id, " task ", task_id, " epoch ", epoch));
  }
  return absl::StrCat(parts[0], "/", parts[1], "/", parts[2], "/", parts[3], "/");
}

absl::Status RendezvousStore::Set(const std::string& worker, const std::string& key,
                                  const std::string& value) {
  if (value.size() > max_value_bytes_) {
    return absl::InvalidArgumentError(
        absl::StrCat("rendezvous value: at most ", max_value_bytes_ >> 10, " KiB"));
  }
  absl::StatusOr<std::string> attempt = CheckMember(key, worker);
  if (!attempt.ok()) return attempt.status();
  std::lock_guard<std::mutex> lock(mu_);
  size_t keys = 0, bytes = 0;
  for (auto it = store_.lower_bound(*attempt);
       it != store_.end() && it->first.starts_with(*attempt); ++it) {
    if (it->first == key) continue;
    ++keys;
    bytes += it->second.size();
  }
  if (keys + 1 > max_keys_per_attempt_ || bytes + value.size() > max_bytes_per_attempt_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("rendezvous of ", *attempt, " is full (at most ", max_keys_per_attempt_,
                     " keys and ", max_bytes_per_attempt_ >> 20, " MiB)"));
  }
  store_[key] = value;
  return absl::OkStatus();
}

absl::StatusOr<std::optional<std::string>> RendezvousStore::Get(const std::string& worker,
                                                                const std::string& key) {
  absl::StatusOr<std::string> attempt = CheckMember(key, worker);
  if (!attempt.ok()) return attempt.status();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = store_.find(key);
  if (it == store_.end()) return std::optional<std::string>();
  return std::optional<std::string>(it->second);
}

void RendezvousStore::DropTask(int64_t job_id, int64_t task_id) {
  const std::string prefix = absl::StrCat("g/", job_id, "/", task_id, "/");
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = store_.lower_bound(prefix); it != store_.end() && it->first.starts_with(prefix);) {
    it = store_.erase(it);
  }
}

size_t RendezvousStore::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return store_.size();
}

}  // namespace quant::coordinator
