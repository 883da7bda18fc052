#include "job/plan.h"

#include <gtest/gtest.h>

#include <map>

namespace quant::tasks {
namespace {

PlanInput FourLayers(bool gsq, int shards) {
  PlanInput in;
  in.num_layers = 4;
  in.layer_has_units = {false, true, true, true};  // layer 0 dense, out of scope `experts`
  in.layer_is_moe = {false, true, true, true};
  in.gsq = gsq;
  in.expert_shards = shards;
  return in;
}

TEST(Plan, DependenciesPointBackwardsAndChainTheLayers) {
  const Plan plan = PlanQuantizeJob(FourLayers(true, 3));
  std::map<int64_t, const Task*> by_id;
  for (const Task& t : plan.tasks) {
    for (int64_t d : t.deps) {
      ASSERT_LT(d, t.id) << t.Name();
      ASSERT_TRUE(by_id.count(d)) << t.Name();
    }
    by_id[t.id] = &t;
    // Every calibrate task waits for the previous layer's propagate (quantized inputs).
    if (t.kind == TaskKind::kCalibrate && t.layer > 0) {
      ASSERT_EQ(t.deps.size(), 1u);
      EXPECT_EQ(by_id[t.deps[0]]->kind, TaskKind::kPropagate);
      EXPECT_EQ(by_id[t.deps[0]]->layer, t.layer - 1);
    }
    if (t.kind == TaskKind::kPropagate && t.layer > 0) {
      EXPECT_EQ(t.deps.size(), 3u) << "waits for every GSQ shard of its layer";
      for (int64_t d : t.deps) EXPECT_EQ(by_id[d]->kind, TaskKind::kGsq);
    }
  }
  EXPECT_EQ(plan.tasks.back().kind, TaskKind::kEvaluate);
  EXPECT_EQ(plan.tasks[plan.tasks.size() - 2].kind, TaskKind::kWrite);
}

TEST(Plan, CountsPerMethod) {
  auto count = [](const Plan& p, TaskKind k) {
    int n = 0;
    for (const Task& t : p.tasks) n += t.kind == k;
    return n;
  };
  const Plan gptq = PlanQuantizeJob(FourLayers(false, 1));
  EXPECT_EQ(count(gptq, TaskKind::kCalibrate), 3);
  EXPECT_EQ(count(gptq, TaskKind::kQuantize), 3);
  EXPECT_EQ(count(gptq, TaskKind::kGsq), 0);
  EXPECT_EQ(count(gptq, TaskKind::kPropagate), 4);  // the dense layer still propagates
  const Plan gsq = PlanQuantizeJob(FourLayers(true, 4));
  EXPECT_EQ(count(gsq, TaskKind::kGsq), 12);
  PlanInput no_eval = FourLayers(true, 1);
  no_eval.evaluate = false;
  EXPECT_EQ(count(PlanQuantizeJob(no_eval), TaskKind::kEvaluate), 0);
  EXPECT_EQ(count(gsq, TaskKind::kPublish), 0);
}

TEST(Plan, AnS3OutputIsPublishedLastAfterWriteAndEvaluate) {
  PlanInput in = FourLayers(true, 2);
  in.publish = true;
  for (bool evaluate : {true, false}) {
    in.evaluate = evaluate;
    const Plan plan = PlanQuantizeJob(in);
    const Task& last = plan.tasks.back();
    ASSERT_EQ(last.kind, TaskKind::kPublish);
    EXPECT_EQ(last.Name(), "publish");
    std::vector<TaskKind> deps;
    for (int64_t d : last.deps) deps.push_back(plan.tasks[d].kind);
    std::vector<TaskKind> want = {TaskKind::kWrite};
    if (evaluate) want.push_back(TaskKind::kEvaluate);
    EXPECT_EQ(deps, want);
  }
  TaskKind kind;
  ASSERT_TRUE(ParseTaskKind("publish", &kind));
  EXPECT_EQ(kind, TaskKind::kPublish);
}

TEST(Plan, NamesAndJson) {
  const Plan plan = PlanQuantizeJob(FourLayers(true, 2));
  const nlohmann::json j = plan.ToJson();
  ASSERT_EQ(j.size(), plan.tasks.size());
  bool saw_shard = false;
  for (const nlohmann::json& t : j) saw_shard |= t["name"] == "L2/gsq[1/2]";
  EXPECT_TRUE(saw_shard);
  EXPECT_EQ(j[0]["name"], "L0/propagate");
}

}  // namespace
}  // namespace quant::tasks
