// The expert exchange on GPUs: NCCL over one communicator per gang, its unique id passed
// through the gang's rendezvous store (the coordinator's in the service). Every collective runs
// under a watchdog: the communicator is non-blocking, the call polls for completion and, past
// the timeout or on an asynchronous NCCL error, aborts the communicator and fails (the gang is
// then re-formed by the coordinator). NVLink multicast is kept off (NCCL_NVLS_ENABLE=0).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/exchange/exchange.h"

namespace quant::exchange {

class NcclExchange : public Exchange {
 public:
  ~NcclExchange() override;
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  // Host bytes, staged through device buffers (the Exchange interface).
  absl::StatusOr<std::vector<std::string>> AllToAll(const std::vector<std::string>& send) override;
  // Device to device: send_bytes[d] bytes from `send` (packed in rank order) go to rank d;
  // recv_bytes[s] from rank s land packed in rank order in `recv`. The counts must agree with
  // the peers' (ExchangeCounts gives them).
  absl::Status AllToAllDevice(const void* send, const std::vector<int64_t>& send_bytes, void* recv,
                              const std::vector<int64_t>& recv_bytes);
  // What every rank will send to this one (an ncclAlltoAll of one int64 per peer).
  absl::StatusOr<std::vector<int64_t>> ExchangeCounts(const std::vector<int64_t>& send_bytes);
  // NCCL's own fixed-size all-to-all of `bytes_per_peer` bytes per peer (the benchmark's
  // baseline).
  absl::Status NativeAllToAll(const void* send, void* recv, int64_t bytes_per_peer);

 private:
  friend absl::StatusOr<std::unique_ptr<NcclExchange>> ConnectNccl(RendezvousStore*,
                                                                   const std::string&, int, int,
                                                                   int,
                                                                   std::chrono::milliseconds);
  NcclExchange() = default;
  // Waits for the stream's work under the watchdog; aborts the communicator on failure.
  absl::Status Wait(const char* what);
  // Waits until the non-blocking communicator has enqueued the last call.
  absl::Status Enqueued(const char* what);
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, size_ = 1;
  std::chrono::milliseconds timeout_{60000};
};

// Rank `rank` of `size` on CUDA device `device`; `prefix` is unique per gang and attempt.
absl::StatusOr<std::unique_ptr<NcclExchange>> ConnectNccl(RendezvousStore* store,
                                                          const std::string& prefix, int rank,
                                                          int size, int device,
                                                          std::chrono::milliseconds timeout);

}  // namespace quant::exchange
