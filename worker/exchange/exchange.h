// The expert-parallel exchange (DESIGN.md section 4): a gang of workers, each holding its own
// routed experts, sends every routed token to its expert's owner and gets the outputs back
// (all-to-all). Gloo over TCP on CPU; NCCL on GPUs comes with the GPU work. Rendezvous goes
// through a key-value store: the coordinator's in the service, a local map in tests.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace quant::exchange {

class RendezvousStore {
 public:
  virtual ~RendezvousStore() = default;
  virtual absl::Status Set(const std::string& key, const std::string& value) = 0;
  // nullopt while the key is not there yet.
  virtual absl::StatusOr<std::optional<std::string>> Get(const std::string& key) = 0;
};

// A rendezvous store in a directory (one file per key, written atomically): for processes on
// one host without a coordinator (the benchmarks and the two-GPU script).
class DirectoryStore : public RendezvousStore {
 public:
  explicit DirectoryStore(std::string dir) : dir_(std::move(dir)) {}
  absl::Status Set(const std::string& key, const std::string& value) override;
  absl::StatusOr<std::optional<std::string>> Get(const std::string& key) override;

 private:
  std::string Path(const std::string& key) const;
  std::string dir_;
};

class Exchange {
 public:
  virtual ~Exchange() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // send[d] goes to rank d; returns what each rank s sent to this one, in rank order. Every
  // member of the gang must call it the same number of times. A member that does not answer
  // within the watchdog's timeout fails the call (DeadlineExceeded or Unavailable).
  virtual absl::StatusOr<std::vector<std::string>> AllToAll(const std::vector<std::string>& send) = 0;
  int64_t bytes_sent() const { return bytes_sent_; }
  int64_t bytes_received() const { return bytes_received_; }

 protected:
  int64_t bytes_sent_ = 0, bytes_received_ = 0;
};

// Connects rank `rank` of `size` over Gloo's TCP transport bound to `host`, meeting the others
// under `prefix` in `store` (unique per gang and attempt). `timeout` is the watchdog of the
// rendezvous and of every collective.
absl::StatusOr<std::unique_ptr<Exchange>> ConnectGloo(RendezvousStore* store,
                                                      const std::string& prefix, int rank,
                                                      int size, const std::string& host,
                                                      std::chrono::milliseconds timeout);

}  // namespace quant::exchange
