// WorkerLoop against FakeCoordinatorClient with injected tasks: no network, no numerics. A
// lease's task runs and its completion is reported; a task's error, a throw and a bad lease
// become failed completions with their message; a revoked lease stops the task and removes its
// attempt; a gang task connects through the coordinator's store under its attempt's prefix;
// heartbeats carry progress; registration retries while the coordinator is unavailable.
#include "worker/service/worker_loop.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "proto/task_wire.h"
#include "worker/service/fake_coordinator_client.h"

namespace quant::worker {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

class WorkerLoopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tmp_ = fs::temp_directory_path() /
           ("worker_loop_test_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(tmp_);
    fs::create_directories(tmp_);
  }
  void TearDown() override { fs::remove_all(tmp_); }

  // A lease of job 1's task `task_id` at epoch 1: a GPTQ quantize of layer 0 (a gang of `gang`
  // when above 1), its attempt under the job's scratch.
  v1::TaskLease Lease(int64_t task_id, int gang = 1) {
    tasks::LeasedTask leased;
    leased.task.id = task_id;
    leased.task.kind = tasks::TaskKind::kQuantize;
    leased.task.layer = 0;
    leased.task.gang = gang;
    leased.output.attempt = (tmp_ / "job-1" / ("attempt-" + std::to_string(task_id))).string();
    leased.output.committed = (tmp_ / "job-1" / ("task-" + std::to_string(task_id))).string();
    v1::TaskLease t;
    t.set_job_id(1);
    t.set_task_id(task_id);
    t.set_epoch(1);
    t.set_name(leased.task.Name());
    t.set_spec_json(R"({"model": ")" + (tmp_ / "model").string() + R"(", "out": ")" +
                    (tmp_ / "out").string() + R"(", "calib": ")" + (tmp_ / "calib.txt").string() +
                    R"(", "method": "gptq", "bits": 3})");
    t.set_job_dir((tmp_ / "job-1").string());
    wire::LeasedTaskToProto(leased, t.mutable_task());
    return t;
  }

  WorkerLoop Loop(TaskFunction task, ConnectGangFunction connect = nullptr) {
    if (!connect) {
      connect = [](exchange::RendezvousStore*, const std::string&, int,
                   int) -> absl::StatusOr<std::unique_ptr<exchange::Exchange>> {
        return absl::InternalError("no gang expected");
      };
    }
    return WorkerLoop(&client_, {.id = "w0", .register_retry_seconds = 0.001}, std::move(task),
                      std::move(connect));
  }

  fs::path tmp_;
  FakeCoordinatorClient client_;
};

TEST_F(WorkerLoopTest, NoLeaseMeansNoTaskAndAWait) {
  WorkerLoop loop = Loop([](auto&&...) { return absl::OkStatus(); });
  ASSERT_TRUE(loop.Register().ok());
  double wait = 0;
  EXPECT_FALSE(loop.RunOnce(&wait));
  EXPECT_DOUBLE_EQ(wait, 0.1);  // the fake's 0.01, floored
  EXPECT_TRUE(client_.completions().empty());
}

TEST_F(WorkerLoopTest, ALeasesTaskRunsAndItsCompletionIsReportedOk) {
  std::string model_seen;
  int64_t task_seen = -1;
  WorkerLoop loop = Loop([&](const tasks::QuantizeJobSpec& spec, const tasks::LeasedTask& leased,
                             exchange::Exchange* exchange, tasks::TaskHooks hooks) {
    model_seen = spec.model_dir;
    task_seen = leased.task.id;
    EXPECT_EQ(exchange, nullptr);
    EXPECT_FALSE(hooks.should_stop());
    fs::create_directories(leased.output.attempt);
    return absl::OkStatus();
  });
  ASSERT_TRUE(loop.Register().ok());
  ASSERT_EQ(client_.registers().size(), 1u);
  EXPECT_EQ(client_.registers()[0].worker_id(), "w0");
  EXPECT_EQ(client_.registers()[0].protocol(), static_cast<uint32_t>(v1::PROTOCOL_VERSION));
  client_.AddLease(Lease(7));
  EXPECT_TRUE(loop.RunOnce());
  EXPECT_EQ(model_seen, (tmp_ / "model").string());
  EXPECT_EQ(task_seen, 7);
  const std::vector<v1::CompleteRequest> done = client_.completions();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_TRUE(done[0].ok());
  EXPECT_EQ(done[0].error(), "");
  EXPECT_EQ(done[0].worker_id(), "w0");
  EXPECT_EQ(done[0].job_id(), 1);
  EXPECT_EQ(done[0].task_id(), 7);
  EXPECT_EQ(done[0].epoch(), 1);
  EXPECT_GE(done[0].seconds(), 0);
  EXPECT_TRUE(fs::exists(tmp_ / "job-1" / "attempt-7"));  // the coordinator commits it
}

TEST_F(WorkerLoopTest, ATaskErrorIsAFailedCompletionWithItsMessage) {
  WorkerLoop loop = Loop([](auto&&...) { return absl::DataLossError("shard 3 is short"); });
  ASSERT_TRUE(loop.Register().ok());
  client_.AddLease(Lease(2));
  EXPECT_TRUE(loop.RunOnce());
  const std::vector<v1::CompleteRequest> done = client_.completions();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_FALSE(done[0].ok());
  EXPECT_THAT(done[0].error(), StartsWith(Lease(2).name() + ": "));  // the task named first
  EXPECT_THAT(done[0].error(), HasSubstr("shard 3 is short"));
}

TEST_F(WorkerLoopTest, ATaskThatThrowsIsAFailedAttemptNotACrash) {
  int calls = 0;
  WorkerLoop loop = Loop([&](auto&&...) -> absl::Status {
    if (++calls == 1) throw std::runtime_error("vector too long\nsecond line");
    return absl::OkStatus();
  });
  ASSERT_TRUE(loop.Register().ok());
  client_.AddLease(Lease(3));
  client_.AddLease(Lease(4));
  EXPECT_TRUE(loop.RunOnce());
  EXPECT_TRUE(loop.RunOnce());  // the loop goes on after the throw
  const std::vector<v1::CompleteRequest> done = client_.completions();
  ASSERT_EQ(done.size(), 2u);
  EXPECT_FALSE(done[0].ok());
  EXPECT_THAT(done[0].error(), HasSubstr("vector too long"));
  EXPECT_THAT(done[0].error(), Not(HasSubstr("second line")));  // one line
  EXPECT_TRUE(done[1].ok());
}

TEST_F(WorkerLoopTest, ARevokedLeaseStopsTheTaskAndRemovesItsAttempt) {
  std::atomic<bool> stopped{false};
  WorkerLoop loop = Loop([&](const tasks::QuantizeJobSpec&, const tasks::LeasedTask& leased,
                             exchange::Exchange*, tasks::TaskHooks hooks) -> absl::Status {
    fs::create_directories(leased.output.attempt);
    std::ofstream(fs::path(leased.output.attempt) / "part") << "bytes";
    // GSQ's steps: ask at each boundary (at most 10 s here; the heartbeat comes every 20 ms).
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < until) {
      if (hooks.should_stop()) {
        stopped = true;
        return absl::CancelledError("stopped at a step boundary");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return absl::OkStatus();
  });
  ASSERT_TRUE(loop.Register().ok());
  client_.Revoke(5);
  client_.AddLease(Lease(5));
  EXPECT_TRUE(loop.RunOnce());
  EXPECT_TRUE(stopped.load());
  EXPECT_FALSE(fs::exists(tmp_ / "job-1" / "attempt-5"));
  const std::vector<v1::CompleteRequest> done = client_.completions();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_FALSE(done[0].ok());
  const std::vector<v1::HeartbeatRequest> beats = client_.heartbeats();
  ASSERT_FALSE(beats.empty());
  ASSERT_EQ(beats[0].held_size(), 1);
  EXPECT_EQ(beats[0].held(0).task_id(), 5);
  EXPECT_EQ(beats[0].held(0).epoch(), 1);
}

TEST_F(WorkerLoopTest, ARevokedLeaseIsNotReportedOkEvenIfTheTaskFinishes) {
  WorkerLoop loop = Loop([&](const tasks::QuantizeJobSpec&, const tasks::LeasedTask& leased,
                             exchange::Exchange*, tasks::TaskHooks hooks) {
    fs::create_directories(leased.output.attempt);
    // A task with no step boundaries: it finishes, but its lease was revoked meanwhile.
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!hooks.should_stop() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return absl::OkStatus();
  });
  ASSERT_TRUE(loop.Register().ok());
  client_.Revoke(6);
  client_.AddLease(Lease(6));
  EXPECT_TRUE(loop.RunOnce());
  const std::vector<v1::CompleteRequest> done = client_.completions();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_FALSE(done[0].ok());
  EXPECT_THAT(done[0].error(), HasSubstr("lease revoked"));
  EXPECT_FALSE(fs::exists(tmp_ / "job-1" / "attempt-6"));
}

TEST_F(WorkerLoopTest, ALeaseThatNamesAnotherTaskFailsWithoutRunningIt) {
  bool ran = false;
  WorkerLoop loop = Loop([&](auto&&...) {
    ran = true;
    return absl::OkStatus();
  });
  ASSERT_TRUE(loop.Register().ok());
  v1::TaskLease lease = Lease(8);
  lease.set_task_id(9);  // the lease's id and its task's disagree
  client_.AddLease(lease);
  EXPECT_TRUE(loop.RunOnce());
  EXPECT_FALSE(ran);
  const std::vector<v1::CompleteRequest> done = client_.completions();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_FALSE(done[0].ok());
  EXPECT_THAT(done[0].error(), HasSubstr("lease of task 9 names task 8"));
}

TEST_F(WorkerLoopTest, HeartbeatsCarryTheTasksProgress) {
  WorkerLoop loop = Loop([&](const tasks::QuantizeJobSpec&, const tasks::LeasedTask&,
                             exchange::Exchange*, tasks::TaskHooks hooks) {
    hooks.on_gsq_step(3, 10, 0.25);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // about fifteen heartbeats
    return absl::OkStatus();
  });
  ASSERT_TRUE(loop.Register().ok());
  client_.AddLease(Lease(10));
  EXPECT_TRUE(loop.RunOnce());
  bool seen = false;
  for (const v1::HeartbeatRequest& beat : client_.heartbeats()) {
    for (const v1::TaskProgress& p : beat.progress()) {
      EXPECT_EQ(p.task_id(), 10);
      EXPECT_EQ(p.phase(), "gptq");
      seen = seen || (p.step() == 3 && p.steps() == 10 && p.loss() == 0.25);
    }
  }
  EXPECT_TRUE(seen);
}

// A dummy connection: the loop only hands it to the task.
class NoExchange : public exchange::Exchange {
 public:
  explicit NoExchange(int rank) : rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return 2; }
  absl::StatusOr<std::vector<std::string>> AllToAll(const std::vector<std::string>&) override {
    return absl::UnimplementedError("not in this test");
  }

 private:
  int rank_;
};

TEST_F(WorkerLoopTest, AGangTaskConnectsThroughTheCoordinatorsStoreUnderItsAttempt) {
  std::string prefix_seen;
  exchange::Exchange* given = nullptr;
  WorkerLoop loop = Loop(
      [&](const tasks::QuantizeJobSpec&, const tasks::LeasedTask& leased,
          exchange::Exchange* exchange, tasks::TaskHooks) {
        EXPECT_EQ(leased.task.gang, 2);
        EXPECT_EQ(exchange, given);
        return absl::OkStatus();
      },
      [&](exchange::RendezvousStore* store, const std::string& prefix, int rank,
          int size) -> absl::StatusOr<std::unique_ptr<exchange::Exchange>> {
        prefix_seen = prefix;
        EXPECT_EQ(rank, 1);
        EXPECT_EQ(size, 2);
        EXPECT_TRUE(store->Set(prefix + "addr1", "host:1").ok());
        absl::StatusOr<std::optional<std::string>> got = store->Get(prefix + "addr1");
        EXPECT_TRUE(got.ok() && *got == std::optional<std::string>("host:1"));
        auto connection = std::make_unique<NoExchange>(rank);
        given = connection.get();
        return connection;
      });
  ASSERT_TRUE(loop.Register().ok());
  v1::TaskLease lease = Lease(11, /*gang=*/2);
  lease.set_rank(1);
  client_.AddLease(lease);
  EXPECT_TRUE(loop.RunOnce());
  EXPECT_EQ(prefix_seen, "g/1/11/1/");
  const std::vector<v1::CompleteRequest> done = client_.completions();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_TRUE(done[0].ok()) << done[0].error();
  EXPECT_EQ(done[0].rank(), 1);
}

TEST_F(WorkerLoopTest, RegisterRetriesWhileTheCoordinatorIsUnavailable) {
  client_.set_unavailable_registers(3);
  WorkerLoop loop = Loop([](auto&&...) { return absl::OkStatus(); });
  EXPECT_TRUE(loop.Register().ok());
  EXPECT_EQ(client_.registers().size(), 4u);
}

}  // namespace
}  // namespace quant::worker
