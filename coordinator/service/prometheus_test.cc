// Prometheus for real: Debian's prometheus, started by the test on loopback, scrapes the
// coordinator and two workers every second during a job (tiny-deepseek-v3, gangs of 2), and
// the job's progress is read back through Prometheus' HTTP query API.
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "coordinator/service/prometheus_test_util.h"
#include "coordinator/service/service_test_util.h"

namespace {

namespace fs = std::filesystem;
using quant::testing::Coordinator;
using quant::testing::Worker;
using quant::testing::PromQuery;
const std::string kModel = std::string(QUANT_SHARED_DIR) + "/models/tiny-deepseek-v3";

TEST(PrometheusTest, ScrapesTheServiceDuringAJobAndAnswersForItsProgress) {
  const fs::path dir = fs::temp_directory_path() / ("prometheus_test_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "token") << "t0ken\n";
  Coordinator c(dir / "state.db", dir / "token");
  ASSERT_TRUE(c.up());
  Worker w0(c.grpc_address(), "w0", dir / "w0.log"), w1(c.grpc_address(), "w1", dir / "w1.log");
  ASSERT_TRUE(w0.up() && w1.up());
  auto prometheus = std::make_unique<quant::testing::Prometheus>(
      dir, std::vector<int>{c.http_port(), w0.http_port(), w1.http_port()});
  const int prom_port = prometheus->port();
  // Prometheus up, and all three targets scraped.
  ASSERT_TRUE(prometheus->WaitForTargets(3));
  int rc = 0;
  const std::string submitted = quant::testing::RunCommand(
      std::string(QCTL_BINARY) + " submit --coordinator " + c.grpc_address() + " --token-file " +
          (dir / "token").string() + " --model " + kModel + " --out " + (dir / "out").string() +
          " --method gsq --bits 2 --steps 30 --calib-tokens 8192 --no-mse --no-eval"
          " --expert-shards 2",
      &rc);
  ASSERT_EQ(rc, 0) << submitted;
  // Progress through Prometheus: tasks done grows while the job runs, then the job succeeds.
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(600);
  double done_midway = -1;
  while (std::chrono::steady_clock::now() < until &&
         PromQuery(prom_port, "quant_jobs{state=\"succeeded\"}") < 1) {
    const double d = PromQuery(prom_port, "quant_tasks{state=\"done\"}");
    if (d > 0 && done_midway < 0) done_midway = d;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  EXPECT_EQ(PromQuery(prom_port, "quant_jobs{state=\"succeeded\"}"), 1);
  EXPECT_GT(done_midway, 0) << "no progress seen while the job ran";
  EXPECT_GE(PromQuery(prom_port, "max_over_time(quant_tasks{state=\"done\"}[10m])"), done_midway);
  EXPECT_GT(PromQuery(prom_port, "sum(quant_exchange_bytes_total{direction=\"sent\"})"), 0);
  EXPECT_GE(PromQuery(prom_port, "sum(quant_worker_tasks_total{outcome=\"committed\"})"), 18);
  std::printf("progress seen midway: %.0f tasks done; committed by the workers: %.0f\n",
              done_midway, PromQuery(prom_port, "sum(quant_worker_tasks_total{outcome=\"committed\"})"));
  prometheus.reset();
  fs::remove_all(dir);
}

}  // namespace
