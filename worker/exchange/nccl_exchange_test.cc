// The NCCL exchange on one GPU (a gang of one: the unique id through a directory store, the
// non-blocking communicator, counts and bytes round trip). Two-GPU checks, the watchdog and the
// bandwidth run through nccl_check on a two-GPU machine (scripts/gpu-two.sh). Skips without a GPU.
#include "worker/exchange/nccl_exchange.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

namespace quant::exchange {
namespace {

TEST(NcclExchange, AGangOfOneMovesBytesToItself) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    GTEST_SKIP() << "no CUDA device here";
  }
  const std::string dir =
      std::filesystem::temp_directory_path() / ("nccl_test_" + std::to_string(getpid()));
  DirectoryStore store(dir);
  auto ex = ConnectNccl(&store, "one/", 0, 1, 0, std::chrono::seconds(30));
  ASSERT_TRUE(ex.ok()) << ex.status();
  auto recv = (*ex)->AllToAll({std::string("hello, expert")});
  ASSERT_TRUE(recv.ok()) << recv.status();
  EXPECT_EQ((*recv)[0], "hello, expert");
  auto empty = (*ex)->AllToAll({std::string()});
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ((*empty)[0], "");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace quant::exchange
