// A lease's task survives the wire: every task of a plan (GSQ shards, gangs, write, evaluate,
// publish) goes to quant.proto's Task and back with its kind, shape, inputs and paths intact;
// a kind or shard the worker cannot run is refused with one line.
#include "proto/task_wire.h"

#include <gtest/gtest.h>

#include "job/plan_input.h"

namespace quant::wire {
namespace {

using tasks::LeasedTask;
using tasks::Task;
using tasks::TaskKind;

tasks::Plan ThreeLayerGsqPlan() {
  tasks::PlanInput in;
  in.num_layers = 3;
  in.layer_has_units = {false, true, true};
  in.layer_is_moe = {false, true, true};
  in.gsq = true;
  in.expert_shards = 2;
  in.evaluate = true;
  in.publish = true;
  return tasks::PlanQuantizeJob(in);
}

const Task& Named(const tasks::Plan& plan, const std::string& name) {
  for (const Task& t : plan.tasks) {
    if (t.Name() == name) return t;
  }
  ADD_FAILURE() << name << " is not in the plan";
  return plan.tasks.front();
}

std::vector<std::string> InputNames(const LeasedTask& t) {
  std::vector<std::string> names;
  for (const tasks::TaskInput& in : t.inputs) names.push_back(in.task.Name());
  return names;
}

TEST(TaskWire, EveryTaskOfAPlanRoundTripsThroughTheProto) {
  const tasks::Plan plan = ThreeLayerGsqPlan();
  ASSERT_GT(plan.tasks.size(), 10u);
  for (const Task& task : plan.tasks) {
    const LeasedTask sent = tasks::LeaseTask(plan, task, "/s/job-1", "s3://b/out", 3);
    v1::LeaseResponse lease;
    LeasedTaskToProto(sent, lease.mutable_task()->mutable_task());
    v1::LeaseResponse wire;
    ASSERT_TRUE(wire.ParseFromString(lease.SerializeAsString()));
    absl::StatusOr<LeasedTask> got = LeasedTaskFromProto(wire.task().task());
    ASSERT_TRUE(got.ok()) << task.Name() << ": " << got.status();
    EXPECT_EQ(got->task.id, task.id);
    EXPECT_EQ(got->task.kind, task.kind);
    EXPECT_EQ(got->task.layer, task.layer);
    EXPECT_EQ(got->task.shard, task.shard);
    EXPECT_EQ(got->task.shards, task.shards);
    EXPECT_EQ(got->task.gang, task.gang);
    EXPECT_EQ(got->task.probe_pass, task.probe_pass);
    EXPECT_EQ(got->task.deps, task.deps);
    EXPECT_EQ(got->task.Name(), task.Name());
    EXPECT_EQ(got->output.attempt, sent.output.attempt);
    EXPECT_EQ(got->output.committed, sent.output.committed);
    ASSERT_EQ(got->inputs.size(), sent.inputs.size()) << task.Name();
    for (size_t i = 0; i < sent.inputs.size(); ++i) {
      EXPECT_EQ(got->inputs[i].task.Name(), sent.inputs[i].task.Name());
      EXPECT_EQ(got->inputs[i].task.kind, sent.inputs[i].task.kind);
      EXPECT_EQ(got->inputs[i].task.gang, sent.inputs[i].task.gang);
      EXPECT_EQ(got->inputs[i].committed, sent.inputs[i].committed);
    }
  }
  // The kind goes as the proto's enum, not a name.
  v1::Task p;
  LeasedTaskToProto(tasks::LeaseTask(plan, Named(plan, "L2/gsq[1/2]"), "/s/job-1", "/o", 1), &p);
  EXPECT_EQ(p.kind(), v1::TASK_GSQ);
}

TEST(TaskWire, TheLeaseNamesWhatEachTaskReadsAndWhereItWrites) {
  const tasks::Plan plan = ThreeLayerGsqPlan();
  auto lease = [&](const std::string& name) {
    return tasks::LeaseTask(plan, Named(plan, name), "/s/job-1", "s3://b/out", 4);
  };
  EXPECT_TRUE(lease("L0/propagate").inputs.empty());  // the calibration windows
  EXPECT_EQ(InputNames(lease("L1/calibrate[x2]")), std::vector<std::string>{"L0/propagate"});
  const LeasedTask gsq = lease("L2/gsq[1/2]");
  EXPECT_EQ(InputNames(gsq), (std::vector<std::string>{"L2/calibrate[x2]", "L2/quantize"}));
  EXPECT_EQ(gsq.inputs[0].committed, "/s/job-1/L2-calibrate");
  EXPECT_EQ(gsq.output.attempt, "/s/job-1/attempts/L2-gsq-1-of-2.e4");
  EXPECT_EQ(gsq.output.committed, "/s/job-1/L2-gsq-1-of-2");
  EXPECT_EQ(InputNames(lease("L2/propagate[x2]")),
            (std::vector<std::string>{"L1/propagate[x2]", "L2/calibrate[x2]", "L2/quantize",
                                      "L2/gsq[0/2]", "L2/gsq[1/2]"}));
  // The write reads the units where quantize and GSQ made them, the reports from propagate.
  EXPECT_EQ(InputNames(lease("write")),
            (std::vector<std::string>{"L0/propagate", "L1/quantize", "L1/gsq[0/2]", "L1/gsq[1/2]",
                                      "L1/propagate[x2]", "L2/quantize", "L2/gsq[0/2]",
                                      "L2/gsq[1/2]", "L2/propagate[x2]"}));
  const LeasedTask publish = lease("publish");
  EXPECT_EQ(InputNames(publish), std::vector<std::string>{"write"});
  EXPECT_EQ(publish.inputs[0].committed, "/s/job-1/out");  // the s3 output's local staging
  EXPECT_EQ(InputNames(lease("evaluate")), std::vector<std::string>{"write"});
}

TEST(TaskWire, AKindOrShardTheWorkerCannotRunIsRefused) {
  const tasks::Plan plan = ThreeLayerGsqPlan();
  v1::Task good;
  LeasedTaskToProto(tasks::LeaseTask(plan, Named(plan, "L2/gsq[1/2]"), "/s", "/o", 1), &good);
  v1::Task p = good;
  p.set_kind(v1::TASK_KIND_UNSPECIFIED);
  EXPECT_EQ(LeasedTaskFromProto(p).status().message(),
            "lease: task kind 0 is not one this worker runs");
  p = good;
  p.set_kind(static_cast<v1::TaskKind>(42));
  EXPECT_FALSE(LeasedTaskFromProto(p).ok());
  p = good;
  p.set_shard(2);
  EXPECT_EQ(LeasedTaskFromProto(p).status().message(),
            "lease: L2/gsq[2/2]: shard 2 of 2 is not a shard");
  p = good;
  p.mutable_inputs(0)->set_committed("");
  EXPECT_FALSE(LeasedTaskFromProto(p).ok());
  p = good;
  p.clear_attempt();
  EXPECT_FALSE(LeasedTaskFromProto(p).ok());
}

}  // namespace
}  // namespace quant::wire
