// The NCCL exchange on one GPU: the checks that make sense with one device. A gang of one is
// refused (gangs have two members or more); rank 0 of a gang whose other member never comes
// fails within the watchdog, at the communicator's creation, instead of hanging. The two-GPU
// checks (bit-equal expert-parallel forward, a stopped member's collective, the bandwidth)
// run through nccl_check on a two-GPU machine (scripts/gpu-two.sh). Skips without a GPU.
#include "worker/exchange/nccl_exchange.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

namespace quant::exchange {
namespace {

TEST(NcclExchange, AMissingMemberFailsTheGangWithinTheWatchdog) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    GTEST_SKIP() << "no CUDA device here";
  }
  const std::string dir =
      std::filesystem::temp_directory_path() / ("nccl_test_" + std::to_string(getpid()));
  DirectoryStore store(dir);
  auto one = ConnectNccl(&store, "one/", 0, 1, 0, std::chrono::seconds(5));
  EXPECT_EQ(one.status().code(), absl::StatusCode::kInvalidArgument) << one.status();
  const auto start = std::chrono::steady_clock::now();
  auto lonely = ConnectNccl(&store, "two/", 0, 2, 0, std::chrono::seconds(3));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_FALSE(lonely.ok());
  EXPECT_EQ(lonely.status().code(), absl::StatusCode::kDeadlineExceeded) << lonely.status();
  EXPECT_LT(seconds, 15.0);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace quant::exchange
