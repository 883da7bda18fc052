// The coordinator's state machine on a real SQLite database: dependencies, leases and epochs,
// retries with backoff, job failure with the task's error, idempotent submission, cancel, and
// state that survives closing and reopening the file.
#include "coordinator/state/state_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

namespace quant::coordinator {
namespace {

namespace fs = std::filesystem;

tasks::Plan SmallPlan() {
  tasks::PlanInput in;
  in.num_layers = 2;
  in.layer_has_units = {true, true};
  in.layer_is_moe = {true, true};
  in.evaluate = false;
  return tasks::PlanQuantizeJob(in);  // L0 calibrate, quantize, propagate; L1 ...; write
}

StateOptions Options() {
  StateOptions o;
  o.lease_seconds = 10;
  o.max_attempts = 3;
  o.backoff_seconds = 1;
  return o;
}

// Leases and completes every ready task until none is left; returns how many ran.
int RunAll(StateStore& s, double* now) {
  int ran = 0;
  while (true) {
    auto lease = s.LeaseTask("w", *now);
    EXPECT_TRUE(lease.ok()) << lease.status();
    if (!lease.ok() || !lease->has_value()) return ran;
    EXPECT_TRUE(s.CompleteTask((*lease)->job_id, (*lease)->task_id, (*lease)->epoch, *now).ok());
    ++ran;
    *now += 1;
  }
}

TEST(StateStore, LeasesFollowDependenciesAndTheJobSucceeds) {
  auto s = StateStore::Open(":memory:", Options());
  ASSERT_TRUE(s.ok()) << s.status();
  const tasks::Plan plan = SmallPlan();
  auto job = (*s)->SubmitJob("job-a", "fp1", "{}", plan);
  ASSERT_TRUE(job.ok()) << job.status();
  auto first = (*s)->LeaseTask("w1", 0);
  ASSERT_TRUE(first.ok() && first->has_value());
  EXPECT_EQ((*first)->name, plan.tasks[0].Name());
  EXPECT_EQ((*first)->epoch, 1);
  // Everything else depends on the first task.
  auto second = (*s)->LeaseTask("w2", 0);
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(second->has_value());
  ASSERT_TRUE((*s)->CompleteTask(*job, (*first)->task_id, 1, 1).ok());
  double now = 2;
  EXPECT_EQ(RunAll(**s, &now), static_cast<int>(plan.tasks.size()) - 1);
  auto rec = (*s)->GetJob(*job);
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->status, JobStatus::kSucceeded);
  EXPECT_EQ(rec->tasks_done, rec->tasks_total);
}

TEST(StateStore, AnExpiredLeaseIsReleasedAndTheOldEpochCannotCommit) {
  auto s = StateStore::Open(":memory:", Options());
  ASSERT_TRUE(s.ok());
  auto job = (*s)->SubmitJob("job-a", "fp1", "{}", SmallPlan());
  ASSERT_TRUE(job.ok());
  auto old = (*s)->LeaseTask("slow", 0);
  ASSERT_TRUE(old.ok() && old->has_value());
  // Heartbeats keep it; past the deadline it goes back, with backoff, to another worker.
  EXPECT_TRUE((*s)->Heartbeat(*job, (*old)->task_id, (*old)->epoch, 5).ok());
  EXPECT_FALSE((*(*s)->LeaseTask("other", 14)).has_value());  // renewed until 15
  auto expired = (*s)->ExpireLeases(16);
  ASSERT_TRUE(expired.ok());
  EXPECT_EQ(*expired, 1);
  EXPECT_FALSE((*(*s)->LeaseTask("other", 16.5)).has_value());  // backoff: 1 s
  auto fresh = (*s)->LeaseTask("other", 17.5);
  ASSERT_TRUE(fresh.ok() && fresh->has_value());
  EXPECT_EQ((*fresh)->task_id, (*old)->task_id);
  EXPECT_EQ((*fresh)->epoch, 2);
  const absl::Status stale = (*s)->CompleteTask(*job, (*old)->task_id, (*old)->epoch, 18);
  EXPECT_EQ(stale.code(), absl::StatusCode::kFailedPrecondition) << stale;
  EXPECT_EQ((*s)->Heartbeat(*job, (*old)->task_id, (*old)->epoch, 18).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE((*s)->CompleteTask(*job, (*fresh)->task_id, (*fresh)->epoch, 18).ok());
  auto tasks = (*s)->Tasks(*job);
  ASSERT_TRUE(tasks.ok());
  EXPECT_EQ((*tasks)[0].status, TaskStatus::kDone);
  EXPECT_EQ((*tasks)[0].executions, 2);
  EXPECT_EQ((*tasks)[0].attempts, 1);
}

TEST(StateStore, RetriesWithBackoffThenFailsTheJobWithTheLastError) {
  auto s = StateStore::Open(":memory:", Options());
  ASSERT_TRUE(s.ok());
  auto job = (*s)->SubmitJob("job-a", "fp1", "{}", SmallPlan());
  ASSERT_TRUE(job.ok());
  double now = 0;
  for (int attempt = 1; attempt <= 3; ++attempt) {
    auto lease = (*s)->LeaseTask("w", now);
    ASSERT_TRUE(lease.ok() && lease->has_value()) << attempt;
    ASSERT_TRUE((*s)->FailTask(*job, (*lease)->task_id, (*lease)->epoch,
                               "out of memory #" + std::to_string(attempt), now).ok());
    // Backoff doubles: 1, 2 s.
    if (attempt < 3) {
      EXPECT_FALSE((*(*s)->LeaseTask("w", now + (1 << (attempt - 1)) - 0.5)).has_value());
      now += (1 << (attempt - 1)) + 0.1;
    }
  }
  auto rec = (*s)->GetJob(*job);
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->status, JobStatus::kFailed);
  EXPECT_NE(rec->error.find("out of memory #3"), std::string::npos) << rec->error;
  EXPECT_NE(rec->error.find("3 times"), std::string::npos) << rec->error;
  EXPECT_FALSE((*(*s)->LeaseTask("w", now + 100)).has_value());  // a failed job leases nothing
}

TEST(StateStore, TheSameClientJobIdMakesOneJob) {
  auto s = StateStore::Open(":memory:", Options());
  ASSERT_TRUE(s.ok());
  auto a = (*s)->SubmitJob("job-a", "fp1", "{}", SmallPlan());
  auto b = (*s)->SubmitJob("job-a", "fp1", "{}", SmallPlan());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  auto c = (*s)->SubmitJob("job-a", "fp2", "{}", SmallPlan());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(c.status().message().find("job-a"), std::string::npos);
  auto jobs = (*s)->ListJobs();
  ASSERT_TRUE(jobs.ok());
  EXPECT_EQ(jobs->size(), 1u);
}

TEST(StateStore, CancelStopsLeasesAndRefusesOldCommits) {
  auto s = StateStore::Open(":memory:", Options());
  ASSERT_TRUE(s.ok());
  auto job = (*s)->SubmitJob("job-a", "fp1", "{}", SmallPlan());
  ASSERT_TRUE(job.ok());
  auto lease = (*s)->LeaseTask("w", 0);
  ASSERT_TRUE(lease.ok() && lease->has_value());
  ASSERT_TRUE((*s)->CancelJob(*job).ok());
  EXPECT_EQ((*s)->CompleteTask(*job, (*lease)->task_id, (*lease)->epoch, 1).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE((*(*s)->LeaseTask("w", 2)).has_value());
  EXPECT_EQ((*s)->CancelJob(*job).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*(*s)->GetJob(*job)).status, JobStatus::kCancelled);
}

TEST(StateStore, StateSurvivesReopeningTheFile) {
  const fs::path dir = fs::temp_directory_path() / ("state_store_test_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string path = (dir / "state.db").string();
  const tasks::Plan plan = SmallPlan();
  int64_t job = 0;
  double now = 0;
  {
    auto s = StateStore::Open(path, Options());
    ASSERT_TRUE(s.ok()) << s.status();
    auto j = (*s)->SubmitJob("job-a", "fp1", "{\"bits\": 3}", plan);
    ASSERT_TRUE(j.ok());
    job = *j;
    for (int i = 0; i < 2; ++i) {  // two tasks done
      auto lease = (*s)->LeaseTask("w", now);
      ASSERT_TRUE(lease.ok() && lease->has_value());
      ASSERT_TRUE((*s)->CompleteTask(job, (*lease)->task_id, (*lease)->epoch, now).ok());
      now += 1;
    }
    auto lease = (*s)->LeaseTask("w", now);  // a third in flight when the coordinator dies
    ASSERT_TRUE(lease.ok() && lease->has_value());
  }
  auto s = StateStore::Open(path, Options());
  ASSERT_TRUE(s.ok()) << s.status();
  auto rec = (*s)->GetJob(job);
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->tasks_done, 2);
  EXPECT_EQ(rec->spec_json, "{\"bits\": 3}");
  now += 20;  // the in-flight lease expires (then 1 s of backoff); the rest runs, and finished
              // tasks are not run again
  ASSERT_EQ(*(*s)->ExpireLeases(now), 1);
  now += 2;
  EXPECT_EQ(RunAll(**s, &now), static_cast<int>(plan.tasks.size()) - 2);
  auto tasks = (*s)->Tasks(job);
  ASSERT_TRUE(tasks.ok());
  for (const TaskRecord& t : *tasks) {
    EXPECT_EQ(t.status, TaskStatus::kDone) << t.name;
    EXPECT_EQ(t.executions, t.task_id == (*tasks)[2].task_id ? 2 : 1) << t.name;
  }
  EXPECT_EQ((*(*s)->GetJob(job)).status, JobStatus::kSucceeded);
  fs::remove_all(dir);
}

TEST(StateStore, AnUnopenableFileIsOneClearError) {
  auto s = StateStore::Open("/nonexistent-dir/state.db", Options());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("/nonexistent-dir/state.db"), std::string::npos);
}

}  // namespace
}  // namespace quant::coordinator
