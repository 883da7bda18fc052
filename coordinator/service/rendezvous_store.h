// The gangs' rendezvous store (Workers.StoreSet / StoreGet): a bounded key/value map in memory,
// scoped to gang attempts. A key "g/<job>/<task>/<epoch>/<rest>" may be set or read only by a
// member of that task's live gang attempt (the task leased at that epoch, the worker one of its
// holders in the state store); each attempt holds at most a bounded number of keys and bytes,
// and an attempt's keys are dropped when it ends (a new lease, a failure, the gang's commit).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "coordinator/service/service_options.h"
#include "coordinator/state/state_store.h"

namespace quant::coordinator {

class RendezvousStore {
 public:
  // Reads `state` (never writes it) for the membership check; the limits come from `options`.
  RendezvousStore(StateStore* state, const ServiceOptions& options);

  // InvalidArgument for a malformed key or an oversized value, PermissionDenied for a worker
  // that is not a member of the key's live attempt, ResourceExhausted when the attempt is full.
  absl::Status Set(const std::string& worker, const std::string& key, const std::string& value);
  // The value, nullopt while the key is not there; the same checks as Set.
  absl::StatusOr<std::optional<std::string>> Get(const std::string& worker, const std::string& key);
  // Drops every key of the task's attempts (an attempt ended, or a new one begins).
  void DropTask(int64_t job_id, int64_t task_id);
  // Keys held, all attempts together (tests).
  size_t size() const;

 private:
  // The key's attempt prefix "g/<job>/<task>/<epoch>/" once the key's form and `worker`'s
  // membership are checked.
  absl::StatusOr<std::string> CheckMember(const std::string& key, const std::string& worker);

  StateStore* state_;
  const size_t max_value_bytes_, max_keys_per_attempt_, max_bytes_per_attempt_;
  mutable std::mutex mu_;  // guards store_; held only around the map, never while calling out
  std::map<std::string, std::string> store_;
};

}  // namespace quant::coordinator
