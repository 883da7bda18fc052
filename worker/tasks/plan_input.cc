#include "worker/tasks/plan_input.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/quant/scope.h"

namespace quant::tasks {

absl::StatusOr<PlanInput> PlanInputFor(const storage::Checkpoint& checkpoint,
                                       const model::ModelConfig& config,
                                       const QuantizeJobSpec& spec) {
  ASSIGN_OR_RETURN(quant::Scope scope, quant::ParseScope(spec.scope));
  PlanInput in;
  in.num_layers = config.num_layers;
  in.layer_has_units.assign(config.num_layers, false);
  in.layer_is_moe.assign(config.num_layers, false);
  for (const std::string& name : checkpoint.Names()) {
    int layer = -1;
    const storage::TensorInfo* info = checkpoint.Info(name);
    if (std::sscanf(name.c_str(), "model.layers.%d.", &layer) == 1 && layer >= 0 &&
        layer < config.num_layers && info != nullptr && info->shape.size() == 2 &&
        quant::InQuantScope(name, scope)) {
      in.layer_has_units[layer] = true;
    }
  }
  for (int layer = 0; layer < config.num_layers; ++layer) {
    in.layer_is_moe[layer] = config.IsMoeLayer(layer);
  }
  in.gsq = spec.method == "gsq";
  in.evaluate = spec.evaluate;
  in.slq = spec.slq;
  in.expert_shards = spec.expert_shards;
  return in;
}

absl::StatusOr<Plan> PlanJob(const QuantizeJobSpec& spec) {
  ASSIGN_OR_RETURN(std::unique_ptr<storage::Checkpoint> checkpoint,
                   storage::Checkpoint::Open(spec.model_dir));
  ASSIGN_OR_RETURN(model::ModelConfig config,
                   model::ModelConfig::FromJson(checkpoint->config(),
                                                spec.model_dir + "/config.json"));
  ASSIGN_OR_RETURN(PlanInput in, PlanInputFor(*checkpoint, config, spec));
  return PlanQuantizeJob(in);
}

std::string TaskDirName(const Task& task) {
  std::string name = task.layer >= 0 ? absl::StrCat("L", task.layer, "-", TaskKindName(task.kind))
                                     : std::string(TaskKindName(task.kind));
  if (task.shards > 1) absl::StrAppend(&name, "-", task.shard, "-of-", task.shards);
  return task.probe_pass ? "probe-" + name : name;
}

TaskOutput TaskOutputPaths(const std::string& job_dir, const std::string& out_dir,
                           const Task& task, int64_t epoch) {
  const std::string suffix = absl::StrCat(".e", epoch);
  switch (task.kind) {
    case TaskKind::kWrite:
      return {absl::StrCat(out_dir, ".attempt", suffix), out_dir};
    case TaskKind::kEvaluate:
      return {absl::StrCat(job_dir, "/attempts/report.json", suffix), out_dir + "/report.json"};
    default:
      return {absl::StrCat(job_dir, "/attempts/", TaskDirName(task), suffix),
              absl::StrCat(job_dir, "/", TaskDirName(task))};
  }
}

}  // namespace quant::tasks
