// The coordinator's managers without gRPC: JobManager, LeaseManager, RendezvousStore and JobLog
// over an in-memory state store and a fake clock. Lease expiry hands a task to another worker
// and the late holder cannot commit; a gang forms from the workers asking and re-forms after a
// failed member, at a higher epoch; the rendezvous store's bounds and scope; the log's bound and
// the change notification that wakes Watch. (The binaries over gRPC: coordinator_service_test.)
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include "coordinator/service/clock.h"
#include "coordinator/service/job_log.h"
#include "coordinator/service/job_manager.h"
#include "coordinator/service/lease_manager.h"
#include "coordinator/service/rendezvous_store.h"
#include "coordinator/service/service_options.h"
#include "coordinator/state/state_store.h"

namespace quant::coordinator {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
const std::string kModel = std::string(QUANT_SHARED_DIR) + "/models/tiny-deepseek-v3";
const std::string kCalib = std::string(QUANT_SHARED_DIR) + "/data/calib/calib.txt";
constexpr double kLeaseSeconds = 10;

class ManagersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tmp_ = fs::temp_directory_path() /
           ("managers_test_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(tmp_);
    fs::create_directories(tmp_);
    StateOptions state_options;
    state_options.lease_seconds = kLeaseSeconds;
    state_options.backoff_seconds = 2;
    auto state = StateStore::Open(":memory:", state_options);
    ASSERT_TRUE(state.ok()) << state.status();
    state_ = std::move(*state);
    options_.lease_seconds = kLeaseSeconds;
    options_.scratch = (tmp_ / "scratch").string();
    options_.lease_long_poll_seconds = 0;  // one look per Lease: the fake clock does not move
    log_ = std::make_unique<JobLog>(&clock_, options_.max_log_lines);
    rendezvous_ = std::make_unique<RendezvousStore>(state_.get(), options_);
    jobs_ = std::make_unique<JobManager>(state_.get(), log_.get(), &clock_, options_);
    leases_ = std::make_unique<LeaseManager>(state_.get(), jobs_.get(), rendezvous_.get(),
                                             log_.get(), &clock_, options_);
  }
  void TearDown() override { fs::remove_all(tmp_); }

  int64_t Submit(int expert_shards = 1) {
    const std::string spec = R"({"calib": ")" + kCalib + R"(", "model": ")" + kModel +
                             R"(", "out": ")" + (tmp_ / "out").string() +
                             R"(", "method": "rtn", "bits": 3, "expert_shards": )" +
                             std::to_string(expert_shards) + "}";
    v1::SubmitResponse resp;
    const absl::Status s = jobs_->Submit("job", spec, /*dry_run=*/false, &resp);
    EXPECT_TRUE(s.ok()) << s;
    return resp.job_id();
  }
  v1::LeaseResponse Lease(const std::string& worker) {
    v1::LeaseResponse resp;
    const absl::Status s = leases_->Lease(
        worker, [] { return false; }, &resp);
    EXPECT_TRUE(s.ok()) << s;
    return resp;
  }
  // Writes the attempt's output where the lease says (what a worker does) and reports it.
  v1::CompleteResponse Complete(const std::string& worker, const v1::TaskLease& t, bool ok = true,
                                bool write = true) {
    if (write) {
      const std::string attempt = t.task().attempt();
      fs::create_directories(fs::path(attempt).parent_path());
      if (t.task().kind() == v1::TASK_EVALUATE) {
        std::ofstream(attempt) << "{}\n";
      } else {
        fs::create_directories(attempt);
      }
    }
    v1::CompleteRequest req;
    req.set_worker_id(worker);
    req.set_job_id(t.job_id());
    req.set_task_id(t.task_id());
    req.set_epoch(t.epoch());
    req.set_rank(t.rank());
    req.set_ok(ok);
    req.set_error(ok ? "" : "lost the exchange");
    v1::CompleteResponse resp;
    const absl::Status s = leases_->Complete(req, &resp);
    EXPECT_TRUE(s.ok()) << s;
    return resp;
  }
  std::vector<int64_t> Revoked(const std::string& worker, const v1::TaskLease& t) {
    v1::HeartbeatRequest req;
    req.set_worker_id(worker);
    v1::TaskLease* held = req.add_held();
    held->set_job_id(t.job_id());
    held->set_task_id(t.task_id());
    held->set_epoch(t.epoch());
    v1::HeartbeatResponse resp;
    leases_->Heartbeat(req, &resp);
    return {resp.revoked_task_ids().begin(), resp.revoked_task_ids().end()};
  }
  TaskRecord Task(int64_t job, int64_t task) {
    absl::StatusOr<TaskRecord> t = state_->GetTask(job, task);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *t : TaskRecord{};
  }

  fs::path tmp_;
  FakeClock clock_;
  ServiceOptions options_;
  std::unique_ptr<StateStore> state_;
  std::unique_ptr<JobLog> log_;
  std::unique_ptr<RendezvousStore> rendezvous_;
  std::unique_ptr<JobManager> jobs_;
  std::unique_ptr<LeaseManager> leases_;
};

TEST_F(ManagersTest, AnExpiredLeaseGoesToAnotherWorkerAndTheLateHolderCannotCommit) {
  const int64_t job = Submit();
  const v1::LeaseResponse first = Lease("a");
  ASSERT_TRUE(first.has_task());
  const v1::TaskLease& a = first.task();
  EXPECT_EQ(a.epoch(), 1);
  EXPECT_TRUE(Revoked("a", a).empty());  // renewed
  EXPECT_FALSE(Lease("b").has_task());   // the first task's dependants wait
  clock_.Advance(kLeaseSeconds + 1);     // a went quiet: the lease expires
  EXPECT_FALSE(Lease("b").has_task());   // released, in backoff (2 s)
  EXPECT_EQ(Task(job, a.task_id()).attempts, 1);
  clock_.Advance(2.5);
  const v1::LeaseResponse second = Lease("b");
  ASSERT_TRUE(second.has_task());
  const v1::TaskLease& b = second.task();
  EXPECT_EQ(b.task_id(), a.task_id());
  EXPECT_EQ(b.epoch(), 2);
  EXPECT_NE(b.task().attempt(), a.task().attempt());  // each epoch its own attempt
  EXPECT_THAT(Revoked("a", a), ::testing::ElementsAre(a.task_id()));
  EXPECT_FALSE(Complete("a", a).committed());  // not a holder: discarded
  EXPECT_EQ(Task(job, a.task_id()).status, TaskStatus::kLeased);
  EXPECT_TRUE(Complete("b", b).committed());
  const TaskRecord done = Task(job, b.task_id());
  EXPECT_EQ(done.status, TaskStatus::kDone);
  EXPECT_EQ(done.executions, 2);
  EXPECT_EQ(done.worker, "b");
  v1::LogsResponse logs;
  ASSERT_TRUE(jobs_->Logs(job, &logs).ok());
  bool discarded = false;
  for (const v1::LogLine& l : logs.lines()) {
    discarded =
        discarded || l.text().find("not a holder of its lease: discarded") != std::string::npos;
  }
  EXPECT_TRUE(discarded);
}

TEST_F(ManagersTest, HeartbeatsKeepALeasePastItsFirstDeadline) {
  const int64_t job = Submit();
  const v1::LeaseResponse first = Lease("a");
  ASSERT_TRUE(first.has_task());
  const v1::TaskLease& a = first.task();
  for (int beat = 0; beat < 5; ++beat) {  // 40 s in all, a heartbeat every 8 s
    clock_.Advance(kLeaseSeconds - 2);
    EXPECT_TRUE(Revoked("a", a).empty());
    EXPECT_FALSE(Lease("b").has_task());  // nothing expired, nothing else ready
  }
  EXPECT_EQ(Task(job, a.task_id()).status, TaskStatus::kLeased);
  EXPECT_EQ(Task(job, a.task_id()).epoch, 1);
  EXPECT_EQ(Task(job, a.task_id()).attempts, 0);
  EXPECT_TRUE(Revoked("b", a) == std::vector<int64_t>{a.task_id()});  // b never held it
  EXPECT_TRUE(Complete("a", a).committed());
}

TEST_F(ManagersTest, AGangFormsFromTheWorkersAskingAndReFormsAfterAFailedMember) {
  const int64_t job = Submit(/*expert_shards=*/2);
  // Worker a runs the single tasks until the next ready one is a gang task: then it waits.
  v1::LeaseResponse single;
  int singles = 0;
  while ((single = Lease("a")).has_task()) {
    ASSERT_EQ(single.task().gang_size(), 1);
    ASSERT_TRUE(Complete("a", single.task()).committed());
    ASSERT_LT(++singles, 100);
  }
  // b asks while a still waits (the fake clock has not moved): the gang forms, a rank 0, b 1.
  const v1::LeaseResponse lb = Lease("b");
  ASSERT_TRUE(lb.has_task());
  const v1::LeaseResponse la = Lease("a");
  ASSERT_TRUE(la.has_task());
  EXPECT_EQ(la.task().task_id(), lb.task().task_id());
  EXPECT_EQ(la.task().epoch(), 1);
  EXPECT_EQ(la.task().rank(), 0);
  EXPECT_EQ(lb.task().rank(), 1);
  EXPECT_THAT(std::vector<std::string>(la.task().gang().begin(), la.task().gang().end()),
              ::testing::ElementsAre("a", "b"));
  const int64_t task = la.task().task_id();
  const std::string key = "g/" + std::to_string(job) + "/" + std::to_string(task) + "/1/addr0";
  EXPECT_TRUE(rendezvous_->Set("a", key, "host:1").ok());
  EXPECT_EQ(rendezvous_->Set("c", key, "host:2").code(), absl::StatusCode::kPermissionDenied);

  // A member fails: the attempt ends, its rendezvous with it, and the other member's late
  // completion is discarded.
  EXPECT_FALSE(Complete("a", la.task(), /*ok=*/false).committed());
  EXPECT_EQ(rendezvous_->size(), 0u);
  EXPECT_FALSE(Complete("b", lb.task()).committed());
  EXPECT_EQ(Task(job, task).status, TaskStatus::kPending);

  // After the backoff the gang re-forms from whoever asks, at epoch 2.
  clock_.Advance(2.5);
  EXPECT_FALSE(Lease("c").has_task());  // waits for a second member
  const v1::LeaseResponse rb = Lease("b");
  ASSERT_TRUE(rb.has_task());
  const v1::LeaseResponse rc = Lease("c");
  ASSERT_TRUE(rc.has_task());
  EXPECT_EQ(rb.task().task_id(), task);
  EXPECT_EQ(rb.task().epoch(), 2);
  EXPECT_EQ(rc.task().epoch(), 2);
  EXPECT_EQ(Task(job, task).worker, "b,c");
  EXPECT_EQ(
      rendezvous_
          ->Set("a", "g/" + std::to_string(job) + "/" + std::to_string(task) + "/2/addr0", "x")
          .code(),
      absl::StatusCode::kPermissionDenied);  // a is no longer a member
  // The task commits with its last member's part.
  EXPECT_TRUE(Complete("b", rb.task()).committed());
  EXPECT_EQ(Task(job, task).status, TaskStatus::kLeased);
  EXPECT_TRUE(Complete("c", rc.task()).committed());
  EXPECT_EQ(Task(job, task).status, TaskStatus::kDone);
}

TEST_F(ManagersTest, AGangMemberThatStopsAskingLeavesTheFormingGang) {
  Submit(/*expert_shards=*/2);
  v1::LeaseResponse single;
  while ((single = Lease("a")).has_task()) ASSERT_TRUE(Complete("a", single.task()).committed());
  clock_.Advance(options_.gang_forget_after_seconds + 0.5);  // a stopped asking
  EXPECT_FALSE(Lease("b").has_task());                       // so b waits alone
  const v1::LeaseResponse lc = Lease("c");                   // c joins b: the gang forms
  ASSERT_TRUE(lc.has_task());
  EXPECT_THAT(std::vector<std::string>(lc.task().gang().begin(), lc.task().gang().end()),
              ::testing::ElementsAre("b", "c"));
  EXPECT_EQ(lc.task().rank(), 1);
  const v1::LeaseResponse lb = Lease("b");
  ASSERT_TRUE(lb.has_task());
  EXPECT_EQ(lb.task().rank(), 0);
  EXPECT_FALSE(Lease("a").has_task());  // a came back too late
}

TEST_F(ManagersTest, WatchIsWokenByAChangeNotByItsSecond) {
  const int64_t job = Submit();
  std::vector<v1::JobStatus> seen;
  std::promise<void> first;
  bool first_set = false;
  auto watch = std::async(std::launch::async, [&] {
    return jobs_->Watch(
        job, [] { return false; },
        [&](const v1::JobStatus& st) {
          seen.push_back(st);
          if (!first_set) {
            first_set = true;
            first.set_value();
          }
          return true;
        });
  });
  first.get_future().wait();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the watch is asleep now
  const auto cancelled_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(jobs_->Cancel(job).ok());
  ASSERT_EQ(watch.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_TRUE(watch.get().ok());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - cancelled_at).count();
  EXPECT_LT(seconds, 0.5);  // woken by the change, not the one-second timeout
  ASSERT_GE(seen.size(), 2u);
  EXPECT_EQ(seen.front().state(), v1::JOB_RUNNING);
  EXPECT_EQ(seen.back().state(), v1::JOB_CANCELLED);
}

TEST_F(ManagersTest, SubmitChecksBeforeStoringAndTheSameClientIdIsOneJob) {
  v1::SubmitResponse resp;
  EXPECT_EQ(jobs_->Submit("", "{}", false, &resp).code(), absl::StatusCode::kInvalidArgument);
  const std::string relative = R"({"calib": ")" + kCalib + R"(", "model": "models/x", "out": ")" +
                               (tmp_ / "out").string() + R"(", "method": "rtn", "bits": 3})";
  const absl::Status s = jobs_->Submit("rel", relative, false, &resp);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("is relative"));
  const int64_t job = Submit();
  const std::string spec = R"({"calib": ")" + kCalib + R"(", "model": ")" + kModel +
                           R"(", "out": ")" + (tmp_ / "out").string() +
                           R"(", "method": "rtn", "bits": 3, "expert_shards": 1})";
  v1::SubmitResponse again;
  ASSERT_TRUE(jobs_->Submit("job", spec, false, &again).ok());
  EXPECT_EQ(again.job_id(), job);
  EXPECT_TRUE(again.existing());
  // Another client id writing the running job's output is refused.
  EXPECT_EQ(jobs_->Submit("other", spec, false, &resp).code(), absl::StatusCode::kAlreadyExists);
}

// A job with one task leased to the gang "a,b" at epoch 1, straight in the state store.
class RendezvousTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto state = StateStore::Open(":memory:");
    ASSERT_TRUE(state.ok());
    state_ = std::move(*state);
    tasks::Plan plan;
    plan.tasks.resize(1);
    plan.tasks[0].gang = 2;
    auto job = state_->SubmitJob("j", "fp", "{}", plan);
    ASSERT_TRUE(job.ok());
    job_ = *job;
    auto lease = state_->LeaseTaskById("a,b", 100, job_, 0);
    ASSERT_TRUE(lease.ok() && lease->has_value());
    options_.rendezvous_max_value_bytes = 1024;
    options_.rendezvous_max_keys_per_attempt = 3;
    options_.rendezvous_max_bytes_per_attempt = 2048;
  }
  std::string Key(const std::string& rest, int epoch = 1) {
    return "g/" + std::to_string(job_) + "/0/" + std::to_string(epoch) + "/" + rest;
  }
  std::unique_ptr<StateStore> state_;
  int64_t job_ = 0;
  ServiceOptions options_;
};

TEST_F(RendezvousTest, OnlyTheLiveGangMembersUseTheirAttemptsKeys) {
  RendezvousStore store(state_.get(), options_);
  ASSERT_TRUE(store.Set("a", Key("k"), "v").ok());
  absl::StatusOr<std::optional<std::string>> got = store.Get("b", Key("k"));
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, std::optional<std::string>("v"));
  got = store.Get("b", Key("missing"));
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
  EXPECT_EQ(store.Get("c", Key("k")).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(store.Set("a", Key("k", 2), "v").code(), absl::StatusCode::kPermissionDenied);
  for (const std::string bad : {"x", "g/", "g/a/b/c/d", "not/g/1/2/3", "g/1/0/1"}) {
    EXPECT_EQ(store.Set("a", bad, "v").code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(store.Set("a", Key(std::string(300, 'k')), "v").code(),
            absl::StatusCode::kInvalidArgument);  // keys of at most 256 bytes
  store.DropTask(job_, 0);
  EXPECT_EQ(store.size(), 0u);
}

TEST_F(RendezvousTest, AnAttemptHoldsBoundedKeysAndBytes) {
  RendezvousStore store(state_.get(), options_);
  const absl::Status big = store.Set("a", Key("big"), std::string(1025, 'x'));
  EXPECT_EQ(big.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(big.message(), HasSubstr("at most 1 KiB"));
  ASSERT_TRUE(store.Set("a", Key("k0"), std::string(1000, 'x')).ok());
  ASSERT_TRUE(store.Set("a", Key("k1"), std::string(1000, 'x')).ok());
  // 2000 bytes held: 49 more pass the 2048-byte bound.
  EXPECT_EQ(store.Set("b", Key("k2"), std::string(49, 'x')).code(),
            absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(store.Set("b", Key("k2"), std::string(48, 'x')).ok());
  // Three keys held: a fourth is refused, a key set again is not a new one.
  const absl::Status full = store.Set("b", Key("k3"), "x");
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(full.message(), HasSubstr("at most 3 keys"));
  EXPECT_TRUE(store.Set("a", Key("k0"), "small").ok());
  EXPECT_EQ(store.size(), 3u);
}

TEST(JobLogTest, KeepsTheLastLinesAndProgressOfTheLiveEpochOnly) {
  FakeClock clock(50);
  JobLog log(&clock, /*max_lines=*/3);
  for (int i = 0; i < 5; ++i) log.Append(1, "coordinator", "line " + std::to_string(i));
  const std::vector<v1::LogLine> lines = log.Lines(1);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines.front().text(), "line 2");
  EXPECT_EQ(lines.back().time(), 50);
  EXPECT_TRUE(log.Lines(2).empty());
  v1::TaskProgress p;
  p.set_job_id(1);
  p.set_task_id(4);
  p.set_epoch(2);
  p.set_step(7);
  log.ReportProgress(p);
  EXPECT_FALSE(log.Progress(1, 4, 1).has_value());  // another epoch's
  ASSERT_TRUE(log.Progress(1, 4, 2).has_value());
  EXPECT_EQ(log.Progress(1, 4, 2)->step(), 7);
  log.DropProgress(1);
  EXPECT_FALSE(log.Progress(1, 4, 2).has_value());
}

TEST(JobLogTest, WaitForChangeWakesOnAChangeAndOtherwiseTimesOut) {
  FakeClock clock;
  JobLog log(&clock, 10);
  uint64_t seen = log.Changes();
  auto start = std::chrono::steady_clock::now();
  log.WaitForChange(seen, 0.05);  // nothing changes: the timeout
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(45));
  std::thread appender([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    log.Append(1, "x", "changed");
  });
  start = std::chrono::steady_clock::now();
  log.WaitForChange(seen, 10);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_NE(log.Changes(), seen);
  appender.join();
  seen = log.Changes();
  log.NotifyChanged();
  start = std::chrono::steady_clock::now();
  log.WaitForChange(seen, 10);  // a change before the wait is not missed
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
}

}  // namespace
}  // namespace quant::coordinator
