// The planner (DESIGN.md section 4): a job becomes an ordered list of tasks with dependencies.
// `qctl quantize` runs the list in-process; the coordinator leases the same tasks to workers.
// Torch-free: the coordinator links it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "nlohmann/json.hpp"

namespace quant::tasks {

enum class TaskKind {
  kCalibrate,  // Hessians, routed counts and full-precision targets of one layer
  kProbe,      // SLQ: every unit of one layer at every candidate bitwidth, scored end to end
  kSolve,      // SLQ: the global bit allocation (coordinator-side), between the two passes
  kQuantize,   // RTN or GPTQ of the layer's units at their bitwidths
  kGsq,        // GSQ refinement of one expert shard of the layer (all experts: one shard)
  kPropagate,  // the quantized layer makes the next layer's inputs
  kWrite,      // export, manifest, index and config last
  kEvaluate,   // the written checkpoint against the original
  kPublish,    // upload the written checkpoint and its report to an s3:// output, manifest last
};

const char* TaskKindName(TaskKind kind);
// The inverse of TaskKindName; false for an unknown name.
bool ParseTaskKind(std::string_view name, TaskKind* kind);

struct Task {
  int64_t id = 0;
  TaskKind kind = TaskKind::kCalibrate;
  int layer = -1;   // -1: job-wide (write, evaluate)
  int shard = 0;    // expert shard of a GSQ task
  int shards = 1;
  // Workers that run the task together, each holding its own experts and exchanging routed
  // tokens (calibrate and propagate of MoE layers when the job has expert shards).
  int gang = 1;
  bool probe_pass = false;    // SLQ's first pass (original weights propagate)
  std::vector<int64_t> deps;  // ids that must finish first; always smaller than id
  std::string Name() const;   // "L3/gsq[1/4]", "L3/calibrate[x4]" (a gang of 4), "write"
};

// What the planner needs to know of the model and the options.
struct PlanInput {
  int num_layers = 0;
  std::vector<bool> layer_has_units;  // any in-scope linear in the layer
  std::vector<bool> layer_is_moe;
  bool gsq = false;                   // method gsq: a refinement after the GPTQ start
  int expert_shards = 1;              // GSQ tasks per MoE layer (the gang's size)
  bool evaluate = true;
  bool slq = false;                   // a probe pass and a solve before the quantize pass
  bool publish = false;               // the output is an s3:// prefix: a publish task last
};

struct Plan {
  std::vector<Task> tasks;
  nlohmann::json ToJson() const;
};

Plan PlanQuantizeJob(const PlanInput& input);

}  // namespace quant::tasks
