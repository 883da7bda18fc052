#include "worker/exchange/nccl_exchange.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdlib>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"

namespace quant::exchange {
namespace {

std::string NcclError(ncclResult_t r) { return ncclGetErrorString(r); }

}  // namespace

struct NcclExchange::Impl {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  int device = 0;
  bool aborted = false;
  // Staging buffers of the host-bytes interface, grown on demand.
  void* send_buf = nullptr;
  void* recv_buf = nullptr;
  size_t send_cap = 0, recv_cap = 0;
  int64_t* counts = nullptr;  // device [2 * size] for ExchangeCounts
};

NcclExchange::~NcclExchange() {
  if (impl_ == nullptr) return;
  cudaSetDevice(impl_->device);
  if (impl_->comm != nullptr && !impl_->aborted) ncclCommDestroy(impl_->comm);
  if (impl_->stream != nullptr) cudaStreamDestroy(impl_->stream);
  cudaFree(impl_->send_buf);
  cudaFree(impl_->recv_buf);
  cudaFree(impl_->counts);
}

absl::Status NcclExchange::Enqueued(const char* what) {
  // A non-blocking communicator may still be enqueueing the last call: nothing else may go on
  // the stream (or to NCCL) before it has.
  const auto end = std::chrono::steady_clock::now() + timeout_;
  while (true) {
    ncclResult_t state = ncclSuccess;
    ncclCommGetAsyncError(impl_->comm, &state);
    if (state == ncclSuccess) return absl::OkStatus();
    if (state != ncclInProgress || std::chrono::steady_clock::now() > end) {
      ncclCommAbort(impl_->comm);
      impl_->aborted = true;
      return absl::UnavailableError(absl::StrCat(
          what, ": NCCL: ", state == ncclInProgress ? "not enqueued within the watchdog"
                                                     : NcclError(state)));
    }
    std::this_thread::yield();
  }
}

absl::Status NcclExchange::Wait(const char* what) {
  const auto end = std::chrono::steady_clock::now() + timeout_;
  while (true) {
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(impl_->comm, &async);
    if (async != ncclSuccess && async != ncclInProgress) {
      ncclCommAbort(impl_->comm);
      impl_->aborted = true;
      return absl::UnavailableError(absl::StrCat(what, ": NCCL: ", NcclError(async)));
    }
    const cudaError_t q = cudaStreamQuery(impl_->stream);
    if (q == cudaSuccess && async == ncclSuccess) return absl::OkStatus();
    if (q != cudaSuccess && q != cudaErrorNotReady) {
      return absl::InternalError(absl::StrCat(what, ": CUDA: ", cudaGetErrorString(q)));
    }
    if (std::chrono::steady_clock::now() > end) {
      // A member is gone or hung: the watchdog turns the collective into a failed gang.
      ncclCommAbort(impl_->comm);
      impl_->aborted = true;
      return absl::DeadlineExceededError(absl::StrCat(
          what, ": no completion within the watchdog's ", timeout_.count(), " ms (a gang member "
          "is missing)"));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

absl::StatusOr<std::vector<int64_t>> NcclExchange::ExchangeCounts(
    const std::vector<int64_t>& send_bytes) {
  if (impl_->aborted) return absl::FailedPreconditionError("the communicator was aborted");
  cudaSetDevice(impl_->device);
  cudaMemcpyAsync(impl_->counts, send_bytes.data(), sizeof(int64_t) * size_,
                  cudaMemcpyHostToDevice, impl_->stream);
  ncclResult_t r = ncclAlltoAll(impl_->counts, impl_->counts + size_, 1, ncclInt64, impl_->comm,
                                impl_->stream);
  if (r != ncclSuccess && r != ncclInProgress) {
    return absl::UnavailableError(absl::StrCat("ncclAlltoAll: ", NcclError(r)));
  }
  if (absl::Status s = Enqueued("all-to-all of the counts"); !s.ok()) return s;
  std::vector<int64_t> recv(size_);
  cudaMemcpyAsync(recv.data(), impl_->counts + size_, sizeof(int64_t) * size_,
                  cudaMemcpyDeviceToHost, impl_->stream);
  if (absl::Status s = Wait("all-to-all of the counts"); !s.ok()) return s;
  return recv;
}

absl::Status NcclExchange::AllToAllDevice(const void* send, const std::vector<int64_t>& send_bytes,
                                          void* recv, const std::vector<int64_t>& recv_bytes) {
  if (impl_->aborted) return absl::FailedPreconditionError("the communicator was aborted");
  cudaSetDevice(impl_->device);
  int64_t so = 0, ro = 0;
  ncclResult_t r = ncclGroupStart();
  for (int p = 0; p < size_ && (r == ncclSuccess || r == ncclInProgress); ++p) {
    if (send_bytes[p] > 0) {
      r = ncclSend(static_cast<const char*>(send) + so, send_bytes[p], ncclUint8, p, impl_->comm,
                   impl_->stream);
    }
    if ((r == ncclSuccess || r == ncclInProgress) && recv_bytes[p] > 0) {
      r = ncclRecv(static_cast<char*>(recv) + ro, recv_bytes[p], ncclUint8, p, impl_->comm,
                   impl_->stream);
    }
    so += send_bytes[p];
    ro += recv_bytes[p];
  }
  const ncclResult_t end = ncclGroupEnd();
  if ((r != ncclSuccess && r != ncclInProgress) || (end != ncclSuccess && end != ncclInProgress)) {
    return absl::UnavailableError(
        absl::StrCat("all-to-all: NCCL: ", NcclError(r != ncclSuccess ? r : end)));
  }
  if (absl::Status s = Enqueued("all-to-all"); !s.ok()) return s;
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    bytes_sent_ += send_bytes[p];
    bytes_received_ += recv_bytes[p];
  }
  return Wait("all-to-all");
}

absl::Status NcclExchange::NativeAllToAll(const void* send, void* recv, int64_t bytes_per_peer) {
  if (impl_->aborted) return absl::FailedPreconditionError("the communicator was aborted");
  cudaSetDevice(impl_->device);
  const ncclResult_t r =
      ncclAlltoAll(send, recv, bytes_per_peer, ncclUint8, impl_->comm, impl_->stream);
  if (r != ncclSuccess && r != ncclInProgress) {
    return absl::UnavailableError(absl::StrCat("ncclAlltoAll: ", NcclError(r)));
  }
  if (absl::Status s = Enqueued("ncclAlltoAll"); !s.ok()) return s;
  return Wait("ncclAlltoAll");
}

absl::StatusOr<std::vector<std::string>> NcclExchange::AllToAll(
    const std::vector<std::string>& send) {
  if (static_cast<int>(send.size()) != size_) {
    return absl::InvalidArgumentError("all-to-all: one buffer per rank is needed");
  }
  std::vector<int64_t> send_bytes(size_);
  int64_t total_send = 0;
  for (int p = 0; p < size_; ++p) total_send += send_bytes[p] = static_cast<int64_t>(send[p].size());
  auto recv_bytes = ExchangeCounts(send_bytes);
  if (!recv_bytes.ok()) return recv_bytes.status();
  int64_t total_recv = 0;
  for (int64_t b : *recv_bytes) total_recv += b;
  auto grow = [](void** buf, size_t* cap, size_t want) {
    if (want <= *cap) return;
    cudaFree(*buf);
    cudaMalloc(buf, want);
    *cap = want;
  };
  grow(&impl_->send_buf, &impl_->send_cap, std::max<int64_t>(1, total_send));
  grow(&impl_->recv_buf, &impl_->recv_cap, std::max<int64_t>(1, total_recv));
  int64_t off = 0;
  for (const std::string& s : send) {
    cudaMemcpyAsync(static_cast<char*>(impl_->send_buf) + off, s.data(), s.size(),
                    cudaMemcpyHostToDevice, impl_->stream);
    off += static_cast<int64_t>(s.size());
  }
  if (absl::Status s = AllToAllDevice(impl_->send_buf, send_bytes, impl_->recv_buf, *recv_bytes);
      !s.ok()) {
    return s;
  }
  std::string host(static_cast<size_t>(total_recv), '\0');
  cudaMemcpy(host.data(), impl_->recv_buf, host.size(), cudaMemcpyDeviceToHost);
  std::vector<std::string> recv(size_);
  off = 0;
  for (int p = 0; p < size_; ++p) {
    recv[p] = host.substr(static_cast<size_t>(off), static_cast<size_t>((*recv_bytes)[p]));
    off += (*recv_bytes)[p];
  }
  return recv;
}

absl::StatusOr<std::unique_ptr<NcclExchange>> ConnectNccl(RendezvousStore* store,
                                                          const std::string& prefix, int rank,
                                                          int size, int device,
                                                          std::chrono::milliseconds timeout) {
  // A gang has two members or more (gang tasks exist only then); a communicator of one rank
  // crashed inside NCCL 2.28's non-blocking path on an H200 (2026-11-26) and is never needed.
  if (size < 2 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat("NCCL gang: rank ", rank, " of ", size, " (a gang has 2 members or more)"));
  }
  // Multicast can take the host's shared GPUs out of service (KINDS.md): never on.
  setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/1);
  std::unique_ptr<NcclExchange> ex(new NcclExchange());
  ex->impl_ = std::make_unique<NcclExchange::Impl>();
  ex->rank_ = rank;
  ex->size_ = size;
  ex->timeout_ = timeout;
  ex->impl_->device = device;
  if (cudaSetDevice(device) != cudaSuccess) {
    return absl::FailedPreconditionError(absl::StrCat("CUDA device ", device, " is not there"));
  }
  // The unique id: rank 0 makes it, the others read it from the gang's rendezvous.
  ncclUniqueId id;
  const std::string key = prefix + "nccl_unique_id";
  if (rank == 0) {
    ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess) return absl::UnavailableError("ncclGetUniqueId: " + NcclError(r));
    if (absl::Status s = store->Set(key, std::string(id.internal, sizeof(id.internal))); !s.ok()) {
      return s;
    }
  } else {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (true) {
      auto v = store->Get(key);
      if (v.ok() && v->has_value() && (*v)->size() == sizeof(id.internal)) {
        std::memcpy(id.internal, (*v)->data(), sizeof(id.internal));
        break;
      }
      if (std::chrono::steady_clock::now() > end) {
        return absl::DeadlineExceededError(
            absl::StrCat("gang rendezvous ", prefix, ": rank 0's NCCL id did not come"));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  cudaStreamCreateWithFlags(&ex->impl_->stream, cudaStreamNonBlocking);
  cudaMalloc(reinterpret_cast<void**>(&ex->impl_->counts), sizeof(int64_t) * 2 * size);
  // Non-blocking, so that the watchdog also covers the communicator's creation.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclResult_t r = ncclCommInitRankConfig(&ex->impl_->comm, size, id, rank, &config);
  if (r != ncclSuccess && r != ncclInProgress) {
    return absl::UnavailableError("ncclCommInitRankConfig: " + NcclError(r));
  }
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (true) {
    ncclResult_t state = ncclInProgress;
    ncclCommGetAsyncError(ex->impl_->comm, &state);
    if (state == ncclSuccess) break;
    if (state != ncclInProgress || std::chrono::steady_clock::now() > end) {
      ncclCommAbort(ex->impl_->comm);
      ex->impl_->aborted = true;
      return absl::DeadlineExceededError(absl::StrCat(
          "NCCL communicator of gang ", prefix, " as rank ", rank, " of ", size, ": ",
          state == ncclInProgress ? "a member did not join within the watchdog" : NcclError(state)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return ex;
}

}  // namespace quant::exchange
