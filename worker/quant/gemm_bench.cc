// Measures the fp32 GEMM rate libtorch reaches on this machine, the floor for eval throughput.
// Prints one JSON line. Run with OPENBLAS_NUM_THREADS set to the cores to use.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <limits>

namespace {

// Enough warm-up calls to fault in buffers and start BLAS threads; best-of-N repeats filter
// out interference from other jobs sharing the cores (a floor wants the machine's best rate).
constexpr int kWarmupCalls = 3;
constexpr int kTimedCalls = 10;

struct GemmResult {
  double best_seconds = 0;
  double gflops = 0;
};

// [m, k] x [k, n] in float32; 2*m*n*k flops per call.
GemmResult TimeMatmul(int64_t m, int64_t k, int64_t n) {
  at::manual_seed(0);  // fixed inputs: the rate should not depend on the run
  const at::Tensor a = at::randn({m, k});
  const at::Tensor b = at::randn({k, n});
  at::Tensor c;
  for (int i = 0; i < kWarmupCalls; ++i) c = at::matmul(a, b);
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < kTimedCalls; ++i) {
    const auto start = std::chrono::steady_clock::now();
    c = at::matmul(a, b);
    const auto stop = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double>(stop - start).count());
  }
  // Keep the result observable so the call cannot be dropped.
  if (!c.defined() || c.size(0) != m) std::abort();
  const double flops =
      2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  return {best, flops / best / 1e9};
}

}  // namespace

int main() {
  // The classic square benchmark size.
  const GemmResult square = TimeMatmul(1024, 1024, 1024);
  // lm_head of the tiny models: 16 eval windows of 256 tokens (4096 rows) times hidden 256 by
  // vocab 4096 (models/*/config.json).
  const GemmResult lm_head = TimeMatmul(4096, 256, 4096);
  const char* env_threads = std::getenv("OPENBLAS_NUM_THREADS");
  std::printf(
      "{\"bench\":\"gemm_fp32\",\"aten_threads\":%d,\"openblas_num_threads\":\"%s\","
      "\"square_1024_gflops\":%.2f,\"square_1024_best_s\":%.6f,"
      "\"lm_head_4096x256x4096_gflops\":%.2f,\"lm_head_4096x256x4096_best_s\":%.6f,"
      "\"warmup_calls\":%d,\"timed_calls\":%d}\n",
      at::get_num_threads(), env_threads != nullptr ? env_threads : "", square.gflops,
      square.best_seconds, lm_head.gflops, lm_head.best_seconds, kWarmupCalls, kTimedCalls);
  return 0;
}
