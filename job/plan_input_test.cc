// The planner's input read from tiny-deepseek-v3 (its dense first layer has no expert units),
// gang tasks for MoE layers, where task outputs go, and the preflight estimate's behaviour.
#include "job/plan_input.h"

#include <gtest/gtest.h>

#include <cerrno>

namespace quant::tasks {
namespace {

const std::string kModel = std::string(QUANT_SHARED_DIR) + "/models/tiny-deepseek-v3";

QuantizeJobSpec Spec(int shards) {
  QuantizeJobSpec s;
  s.model_dir = kModel;
  s.out_dir = "/tmp/out";
  s.method = Method::kGsq;
  s.bits = 3;
  s.expert_shards = shards;
  return s;
}

TEST(PlanInput, MoeLayersCalibrateAndPropagateAsGangs) {
  auto plan = PlanJob(Spec(2));
  ASSERT_TRUE(plan.ok()) << plan.status();
  int gangs = 0, gsq = 0;
  for (const Task& t : plan->tasks) {
    if (t.layer == 0) EXPECT_EQ(t.kind, TaskKind::kPropagate) << t.Name();  // dense: no units
    if (t.gang == 2) {
      ++gangs;
      EXPECT_TRUE(t.kind == TaskKind::kCalibrate || t.kind == TaskKind::kPropagate) << t.Name();
      EXPECT_NE(t.Name().find("[x2]"), std::string::npos);
    }
    gsq += t.kind == TaskKind::kGsq;
  }
  EXPECT_EQ(gangs, 6);  // 3 MoE layers x (calibrate, propagate)
  EXPECT_EQ(gsq, 6);    // 2 shards each
}

TEST(PlanInput, OutputsGoToTheScratchExceptTheCheckpointAndTheReport) {
  Task t;
  t.kind = TaskKind::kGsq;
  t.layer = 3;
  t.shard = 1;
  t.shards = 4;
  const TaskOutput gsq = TaskOutputPaths("/s/job-1", "/out/x", t, 7);
  EXPECT_EQ(gsq.attempt, "/s/job-1/attempts/L3-gsq-1-of-4.e7");
  EXPECT_EQ(gsq.committed, "/s/job-1/L3-gsq-1-of-4");
  t.kind = TaskKind::kWrite;
  t.layer = -1;
  t.shards = 1;
  EXPECT_EQ(TaskOutputPaths("/s/job-1", "/out/x", t, 2).committed, "/out/x");
  EXPECT_EQ(TaskOutputPaths("/s/job-1", "/out/x", t, 2).attempt, "/out/x.attempt.e2");
  t.kind = TaskKind::kEvaluate;
  EXPECT_EQ(TaskOutputPaths("/s/job-1", "/out/x", t, 2).committed, "/out/x/report.json");
  // An s3:// output is written and evaluated in the job's scratch, then published from there.
  EXPECT_EQ(LocalOutDir("/s/job-1", "s3://b/out/x"), "/s/job-1/out");
  EXPECT_EQ(TaskOutputPaths("/s/job-1", "s3://b/out/x", t, 2).committed,
            "/s/job-1/out/report.json");
  t.kind = TaskKind::kWrite;
  EXPECT_EQ(TaskOutputPaths("/s/job-1", "s3://b/out/x", t, 2).committed, "/s/job-1/out");
  EXPECT_EQ(TaskOutputPaths("/s/job-1", "s3://b/out/x", t, 2).attempt, "/s/job-1/out.attempt.e2");
  t.kind = TaskKind::kPublish;
  EXPECT_EQ(TaskOutputPaths("/s/job-1", "s3://b/out/x", t, 2).committed, "/s/job-1/publish");
}

TEST(PlanInput, TheEstimateSplitsTheExpertsOverTheGang) {
  auto checkpoint = storage::Checkpoint::Open(kModel);
  ASSERT_TRUE(checkpoint.ok());
  auto config = model::ModelConfig::FromJson((*checkpoint)->config(), "config.json");
  ASSERT_TRUE(config.ok());
  const JobEstimate one = EstimateJob(**checkpoint, *config, Spec(1));
  const JobEstimate two = EstimateJob(**checkpoint, *config, Spec(2));
  EXPECT_GT(one.worker_memory_bytes, 0u);
  EXPECT_LE(two.worker_memory_bytes, one.worker_memory_bytes);
  EXPECT_NEAR(two.gsq_tflop_per_worker, one.gsq_tflop_per_worker / 2, 1e-12);
  // 3-bit experts: the checkpoint shrinks, but not below its unquantized part.
  EXPECT_LT(one.output_bytes, (*checkpoint)->total_bytes());
  EXPECT_GT(one.output_bytes, (*checkpoint)->total_bytes() / 8);
  EXPECT_GT(one.scratch_bytes, 0u);
}

// The free-space preflight with a fake statvfs: "/" has `free_bytes`, nothing below it exists.
storage::StatvfsFn RootWithFree(uint64_t free_bytes) {
  return [free_bytes](const char* path, struct statvfs* out) {
    if (std::string(path) != "/") {
      errno = ENOENT;
      return -1;
    }
    *out = {};
    out->f_frsize = 1;
    out->f_bavail = free_bytes;
    return 0;
  };
}

TEST(PlanInput, TheDiskNeedsAreTheCheckpointAndEveryLayersHandOff) {
  auto checkpoint = storage::Checkpoint::Open(kModel);
  ASSERT_TRUE(checkpoint.ok());
  auto config = model::ModelConfig::FromJson((*checkpoint)->config(), "config.json");
  ASSERT_TRUE(config.ok());
  const QuantizeJobSpec spec = Spec(1);
  const JobEstimate e = EstimateJob(**checkpoint, *config, spec);
  auto plan = PlanJob(spec);
  ASSERT_TRUE(plan.ok());
  // In memory: the checkpoint only.
  std::vector<storage::SpaceNeed> needs = DiskNeeds(e, *plan, spec, "");
  ASSERT_EQ(needs.size(), 1u);
  EXPECT_EQ(needs[0].path, "/tmp/out");
  EXPECT_EQ(needs[0].bytes, e.output_bytes);
  // Resumable: plus the 3 calibrated (MoE) layers' hand-off state, kept until the end.
  needs = DiskNeeds(e, *plan, spec, "/tmp/out.qctl-work");
  ASSERT_EQ(needs.size(), 2u);
  EXPECT_EQ(needs[1].bytes, 3 * e.scratch_bytes);
  // s3://: staged in the work directory.
  QuantizeJobSpec s3 = spec;
  s3.out_dir = "s3://b/out";
  needs = DiskNeeds(e, *plan, s3, "/w");
  ASSERT_EQ(needs.size(), 2u);
  EXPECT_EQ(needs[0].path, "/w");
  EXPECT_EQ(needs[1].bytes, e.output_bytes);

  const uint64_t total = e.output_bytes + 3 * e.scratch_bytes;
  EXPECT_TRUE(CheckDiskSpace(spec, "/tmp/out.qctl-work", 0, RootWithFree(total)).ok());
  const absl::Status s = CheckDiskSpace(spec, "/tmp/out.qctl-work", 0, RootWithFree(total - 1));
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_NE(s.message().find("/tmp/out: not enough free disk space"), std::string::npos) << s;
  // A resumed run's work already on disk counts against the need.
  EXPECT_TRUE(CheckDiskSpace(spec, "/tmp/out.qctl-work", 1, RootWithFree(total - 1)).ok());
  // In memory it needs the checkpoint's bytes only.
  EXPECT_TRUE(CheckDiskSpace(spec, "", 0, RootWithFree(e.output_bytes)).ok());
  EXPECT_FALSE(CheckDiskSpace(spec, "", 0, RootWithFree(e.output_bytes - 1)).ok());
}

}  // namespace
}  // namespace quant::tasks
