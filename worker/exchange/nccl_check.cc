// The NCCL exchange on a multi-GPU host, one process per GPU (scripts/gpu-two.sh starts them),
// meeting through a directory store:
//   --mode bandwidth        the token exchange of a Kimi-K2-shaped layer (48 experts per GPU,
//                           5461 routed rows per expert, hidden 7168, bf16, each source sending
//                           every owner its share, +-5% per peer so the sizes really vary)
//                           through our exchange (counts, then grouped send/recv), next to
//                           NCCL's own ncclAlltoAll of the same mean bytes, in one run.
//   --mode watchdog         rank 1 stops answering (a stopped member); rank 0's all-to-all must
//                           fail within the watchdog, the communicator aborted.
//   --mode expert-parallel  tiny-deepseek-v3's first MoE layer forwarded by the gang, each rank
//                           holding only its experts, against one process on one GPU: equal?
//   --mode lonely           one GPU: rank 0 of a gang whose other members never come must fail
//                           at the communicator's creation within the watchdog (and a gang of
//                           one is refused).
// Prints one JSON line per rank; exits non-zero when a check fails.
#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "worker/exchange/expert_parallel.h"
#include "worker/exchange/nccl_exchange.h"
#include "worker/model/model.h"

namespace {

using quant::exchange::NcclExchange;
using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

int Bandwidth(NcclExchange& ex, int iters) {
  const int n = ex.size();
  constexpr int64_t kExpertsPerGpu = 48, kRowsPerExpert = 5461, kHidden = 7168, kBytes = 2;
  // Rows each owner receives from each source (uniform routing), +-5% per pair.
  const int64_t mean_rows = kExpertsPerGpu * kRowsPerExpert / n;
  std::mt19937 rng(1234);
  std::vector<std::vector<int64_t>> rows(n, std::vector<int64_t>(n));
  for (auto& from : rows) {
    for (int64_t& r : from) {
      r = mean_rows + static_cast<int64_t>(std::uniform_int_distribution<int>(-5, 5)(rng)) *
                          mean_rows / 100;
    }
  }
  std::vector<int64_t> send_bytes(n);
  int64_t total_send = 0;
  for (int d = 0; d < n; ++d) total_send += send_bytes[d] = rows[ex.rank()][d] * kHidden * kBytes;
  int64_t max_total = 0;
  for (int s = 0; s < n; ++s) {
    int64_t t = 0;
    for (int d = 0; d < n; ++d) t += rows[s][d] * kHidden * kBytes;
    max_total = std::max(max_total, t);
  }
  const int64_t mean_bytes = mean_rows * kHidden * kBytes;
  void *send = nullptr, *recv = nullptr;
  const size_t cap = static_cast<size_t>(std::max(max_total * 2, mean_bytes * n));
  cudaMalloc(&send, cap);
  cudaMalloc(&recv, cap);
  cudaMemset(send, 1, cap);
  double ours_ms = 1e30, counts_ms = 1e30, native_ms = 1e30;
  int64_t peer_bytes = 0;
  for (int it = 0; it < iters + 2; ++it) {  // two warm-up rounds
    auto t0 = Clock::now();
    auto recv_bytes = ex.ExchangeCounts(send_bytes);
    if (!recv_bytes.ok()) {
      std::fprintf(stderr, "%s\n", std::string(recv_bytes.status().message()).c_str());
      return 1;
    }
    const double c = Ms(t0);
    absl::Status s = ex.AllToAllDevice(send, send_bytes, recv, *recv_bytes);
    const double ours = Ms(t0);
    auto t1 = Clock::now();
    if (s.ok()) s = ex.NativeAllToAll(send, recv, mean_bytes);
    const double native = Ms(t1);
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
      return 1;
    }
    if (it >= 2) {
      ours_ms = std::min(ours_ms, ours);
      counts_ms = std::min(counts_ms, c);
      native_ms = std::min(native_ms, native);
    }
    peer_bytes = 0;
    for (int p = 0; p < n; ++p) {
      if (p != ex.rank()) peer_bytes += send_bytes[p] + (*recv_bytes)[p];
    }
  }
  const int64_t native_peer_bytes = 2 * mean_bytes * (n - 1);
  std::printf(
      "{\"mode\":\"bandwidth\",\"rank\":%d,\"ranks\":%d,\"bytes_to_and_from_peers\":%lld,"
      "\"ours_ms\":%.2f,\"counts_ms\":%.3f,\"ours_gb_s\":%.1f,\"native_bytes_to_and_from_peers\":"
      "%lld,\"native_ms\":%.2f,\"native_gb_s\":%.1f,\"ours_over_native_time\":%.3f}\n",
      ex.rank(), n, static_cast<long long>(peer_bytes), ours_ms, counts_ms,
      peer_bytes / ours_ms / 1e6, static_cast<long long>(native_peer_bytes), native_ms,
      native_peer_bytes / native_ms / 1e6,
      (ours_ms / peer_bytes) / (native_ms / native_peer_bytes));
  cudaFree(send);
  cudaFree(recv);
  return 0;
}

int Watchdog(NcclExchange& ex, double timeout_s) {
  if (ex.rank() == 1) {
    // A stopped member: alive, connected, never joining the collective.
    std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 3000)));
    std::printf("{\"mode\":\"watchdog\",\"rank\":1,\"stopped\":true}\n");
    return 0;
  }
  const auto t0 = Clock::now();
  auto recv = ex.AllToAll(std::vector<std::string>(ex.size(), std::string(1 << 20, 'x')));
  const double ms = Ms(t0);
  const bool failed = !recv.ok();
  std::printf("{\"mode\":\"watchdog\",\"rank\":0,\"failed\":%s,\"after_ms\":%.0f,"
              "\"watchdog_ms\":%.0f,\"error\":\"%s\"}\n",
              failed ? "true" : "false", ms, timeout_s * 1000,
              failed ? std::string(recv.status().message()).c_str() : "");
  return failed && ms < timeout_s * 1000 + 5000 ? 0 : 1;
}

int ExpertParallelCheck(NcclExchange& ex, const std::string& model_dir) {
  auto m = quant::model::Model::Open(model_dir, quant::model::ComputeDType::kF32);
  if (!m.ok()) return 1;
  (*m)->SetDevice(at::Device(at::kCUDA, 0));
  const auto& c = (*m)->config();
  int layer = 0;
  while (!c.IsMoeLayer(layer)) ++layer;
  // One process, every expert, on this GPU: the reference.
  auto full = (*m)->LoadLayer(layer, nullptr);
  if (!full.ok()) return 1;
  at::manual_seed(7);
  std::vector<at::Tensor> inputs, reference;
  for (int b = 0; b < 4; ++b) {
    inputs.push_back(at::randn({2, 32, c.hidden_size}).to(at::Device(at::kCUDA, 0)));
    reference.push_back((*m)->LayerForward(*full, inputs.back(), nullptr));
  }
  // The gang: own experts only.
  quant::exchange::ExpertParallelRunner runner(&ex, c.num_experts);
  const auto [first, last] = quant::exchange::OwnedExperts(ex.rank(), ex.size(), c.num_experts);
  (*m)->SetExpertParallel(first, last, &runner);
  auto w = (*m)->LoadLayer(layer, nullptr);
  if (!w.ok()) return 1;
  int equal = 0, batches = 0;
  const int steps = (4 + ex.size() - 1) / ex.size();
  for (int step = 0; step < steps; ++step) {
    const int b = step * ex.size() + ex.rank();
    if (b < 4) {
      at::Tensor out = (*m)->LayerForward(*w, inputs[b], nullptr);
      if (!runner.status().ok()) break;
      equal += at::equal(out, reference[b]);
      ++batches;
    } else if (!runner.Idle(**m, *w, nullptr).ok()) {
      break;
    }
  }
  std::printf("{\"mode\":\"expert-parallel\",\"rank\":%d,\"resident_experts\":%d,"
              "\"batches\":%d,\"bit_equal\":%d,\"bytes_sent\":%lld,\"status\":\"%s\"}\n",
              ex.rank(), last - first, batches, equal, static_cast<long long>(ex.bytes_sent()),
              std::string(runner.status().message()).c_str());
  return runner.status().ok() && equal == batches && batches > 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"NCCL exchange checks and bandwidth, one process per GPU"};
  int rank = 0, size = 2, iters = 10;
  std::string dir, mode = "bandwidth", model;
  double timeout = 30;
  app.add_option("--rank", rank)->required();
  app.add_option("--size", size)->required();
  app.add_option("--dir", dir, "rendezvous directory shared by the ranks")->required();
  app.add_option("--mode", mode)->capture_default_str();
  app.add_option("--iters", iters)->capture_default_str();
  app.add_option("--timeout", timeout, "watchdog, seconds")->capture_default_str();
  app.add_option("--model", model, "model directory (expert-parallel)");
  CLI11_PARSE(app, argc, argv);
  quant::exchange::DirectoryStore store(dir);
  if (mode == "lonely") {
    auto one = quant::exchange::ConnectNccl(&store, "one/", 0, 1, 0, std::chrono::seconds(5));
    const auto t0 = Clock::now();
    auto lonely = quant::exchange::ConnectNccl(
        &store, "lonely/", 0, size, 0,
        std::chrono::milliseconds(static_cast<int64_t>(timeout * 1000)));
    const double ms = Ms(t0);
    std::printf("{\"mode\":\"lonely\",\"gang_of_one_refused\":%s,\"failed\":%s,"
                "\"after_ms\":%.0f,\"watchdog_ms\":%.0f,\"error\":\"%s\"}\n",
                one.ok() ? "false" : "true", lonely.ok() ? "false" : "true", ms, timeout * 1000,
                std::string(lonely.status().message()).c_str());
    return !one.ok() && !lonely.ok() && ms < timeout * 1000 + 5000 ? 0 : 1;
  }
  auto ex = quant::exchange::ConnectNccl(
      &store, mode + "/", rank, size, /*device=*/0,
      std::chrono::milliseconds(static_cast<int64_t>(timeout * 1000)));
  if (!ex.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", rank, std::string(ex.status().message()).c_str());
    return 1;
  }
  if (mode == "bandwidth") return Bandwidth(**ex, iters);
  if (mode == "watchdog") return Watchdog(**ex, timeout);
  if (mode == "expert-parallel") return ExpertParallelCheck(**ex, model);
  std::fprintf(stderr, "unknown --mode %s\n", mode.c_str());
  return 2;
}
