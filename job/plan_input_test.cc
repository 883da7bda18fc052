// The planner's input read from tiny-deepseek-v3 (its dense first layer has no expert units),
// gang tasks for MoE layers, where task outputs go, and the preflight estimate's behaviour.
#include "job/plan_input.h"

#include <gtest/gtest.h>

namespace quant::tasks {
namespace {

const std::string kModel = std::string(QUANT_SHARED_DIR) + "/models/tiny-deepseek-v3";

QuantizeJobSpec Spec(int shards) {
  QuantizeJobSpec s;
  s.model_dir = kModel;
  s.out_dir = "/tmp/out";
  s.method = "gsq";
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

}  // namespace
}  // namespace quant::tasks
