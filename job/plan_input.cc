#include "job/plan_input.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "storage/object_store.h"
#include "job/config_check.h"
#include "job/scope.h"

namespace quant::tasks {

absl::StatusOr<PlanInput> PlanInputFor(const storage::Checkpoint& checkpoint,
                                       const model::ModelConfig& config,
                                       const QuantizeJobSpec& spec) {
  const quant::Scope scope = spec.scope;
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
  in.gsq = spec.method == Method::kGsq;
  in.evaluate = spec.evaluate;
  in.slq = spec.slq;
  in.expert_shards = spec.expert_shards;
  in.publish = storage::IsS3Location(spec.out_dir);
  return in;
}

JobEstimate EstimateJob(const storage::Checkpoint& checkpoint, const model::ModelConfig& c,
                        const QuantizeJobSpec& spec) {
  JobEstimate e;
  const double f32 = 4;
  const double g = std::max(1, spec.expert_shards);
  const double tokens = static_cast<double>(spec.calib_tokens / spec.window_tokens) *
                        spec.window_tokens;
  const double h = c.hidden_size, inter = c.moe_intermediate_size;
  const double k = c.experts_per_token, experts = c.num_experts;
  const double expert_params = 3 * h * inter;
  // The layer's tensors other than routed experts (attention, router, shared experts, norms),
  // the largest over layers, and the stored bytes of what is not quantized.
  const quant::Scope scope = spec.scope;
  double other_params = 0, kept_bytes = 0, quantized_params = 0;
  std::map<int, double> layer_other;
  for (const std::string& name : checkpoint.Names()) {
    const storage::TensorInfo* info = checkpoint.Info(name);
    if (info == nullptr) continue;
    double n = 1;
    for (int64_t d : info->shape) n *= static_cast<double>(d);
    const bool quantized = info->shape.size() == 2 && quant::InQuantScope(name, scope);
    if (quantized) {
      quantized_params += n;
    } else {
      kept_bytes += n * storage::DTypeSize(info->dtype);
    }
    int layer = -1;
    if (std::sscanf(name.c_str(), "model.layers.%d.", &layer) == 1 &&
        name.find(".mlp.experts.") == std::string::npos) {
      layer_other[layer] += n;
    }
  }
  for (const auto& [layer, n] : layer_other) other_params = std::max(other_params, n);
  const double routed = tokens * k;  // (token, expert) pairs per MoE layer
  const double hessians = (h * h + inter * inter) * f32;  // gate/up share one; down its own
  // A gang member (calibrate/propagate): its share of the experts and of the batches, the
  // layer's other weights, its experts' Hessians and GSQ's captured tokens and targets.
  const double gang = other_params * f32 + experts / g * (expert_params * f32 + hessians) +
                      tokens / g * h * f32 * 2 + routed / g * h * f32 * 2;
  // Quantize (GPTQ of the whole layer on one worker): every expert with its Hessian, twice.
  const double quantize = other_params * f32 + experts * (expert_params * f32 * 2 + hessians);
  // GSQ of one shard: per weight the original, the soft weight and its gradient (fp32), five
  // logits and their momentum (fp32 on the CPU path), the start codes; the shard's tokens.
  // (Only GSQ jobs have GSQ tasks.)
  const double gsq = spec.method != Method::kGsq
                         ? 0
                         : experts / g * expert_params * (3 * f32 + 10 * f32 + 1) +
                               routed / g * h * f32 * 2;
  e.worker_memory_bytes = static_cast<uint64_t>(std::max({gang, quantize, gsq}));
  e.peak_task = gang >= quantize && gang >= gsq ? "calibrate/propagate"
                : quantize >= gsq              ? "quantize"
                                               : "gsq";
  const double bits = spec.slq ? spec.slq_budget : spec.bits;
  const double per_param = bits / 8 + 2.0 / spec.group_size + (spec.grid == quant::Grid::kAsymmetric ? 0.5 : 0) /
                                                                   spec.group_size;
  e.output_bytes = static_cast<uint64_t>(kept_bytes + quantized_params * per_param);
  // The scratch at its largest: a layer's inputs, its calibration and its quantized units.
  e.scratch_bytes = static_cast<uint64_t>(tokens * h * f32 * 2 + experts * hessians +
                                          routed * h * f32 * 2 +
                                          experts * expert_params * (1 + 8.0 / spec.group_size));
  // GSQ's matmuls: per step and expert, rows = batch tokens x k / E, forward and two backward
  // products of the three projections (2 FLOPs a multiply-add).
  if (spec.method == Method::kGsq) {
    int moe_layers = 0;
    for (int l = 0; l < c.num_layers; ++l) moe_layers += c.IsMoeLayer(l);
    const double rows = static_cast<double>(spec.batch_windows) * spec.window_tokens * k / experts;
    const double flop = moe_layers * spec.steps * experts * 3 * 2 * rows * expert_params;
    e.gsq_tflop_per_worker = flop / g / 1e12;
    e.assumed_tflops = spec.device == Device::kCuda ? 500 : 0.15;
    e.seconds_per_worker = e.gsq_tflop_per_worker / e.assumed_tflops;
  }
  return e;
}

std::vector<storage::SpaceNeed> DiskNeeds(const JobEstimate& e, const Plan& plan,
                                          const QuantizeJobSpec& spec,
                                          const std::string& work_dir) {
  int64_t layers = 0;
  for (const Task& t : plan.tasks) layers += t.kind == TaskKind::kCalibrate && !t.probe_pass;
  std::vector<storage::SpaceNeed> needs;
  const bool s3 = storage::IsS3Location(spec.out_dir);
  if (!s3) needs.push_back({spec.out_dir, e.output_bytes, "the checkpoint"});
  if (!work_dir.empty()) {
    needs.push_back({work_dir, e.scratch_bytes * static_cast<uint64_t>(layers),
                     absl::StrCat("the work directory (", layers, " layers' hand-off state)")});
    if (s3) needs.push_back({work_dir, e.output_bytes, "the checkpoint staged for upload"});
  } else if (s3) {
    std::error_code ec;
    needs.push_back({std::filesystem::temp_directory_path(ec).string(), e.output_bytes,
                     "the checkpoint staged for upload"});
  }
  return needs;
}

absl::Status CheckDiskSpace(const QuantizeJobSpec& spec, const std::string& work_dir,
                            uint64_t work_dir_bytes, const storage::StatvfsFn& statvfs_fn) {
  ASSIGN_OR_RETURN(std::unique_ptr<storage::Checkpoint> checkpoint,
                   storage::Checkpoint::Open(spec.model_dir));
  ASSIGN_OR_RETURN(model::ModelConfig config, model::ReadModelConfig(*checkpoint));
  ASSIGN_OR_RETURN(PlanInput in, PlanInputFor(*checkpoint, config, spec));
  const Plan plan = PlanQuantizeJob(in);
  const JobEstimate e = EstimateJob(*checkpoint, config, spec);
  std::vector<storage::SpaceNeed> needs = DiskNeeds(e, plan, spec, work_dir);
  for (storage::SpaceNeed& n : needs) {
    if (!work_dir.empty() && n.path == work_dir) {
      const uint64_t credit = std::min(n.bytes, work_dir_bytes);
      n.bytes -= credit;
      work_dir_bytes -= credit;
    }
  }
  return storage::CheckFreeSpace(needs, statvfs_fn);
}

absl::StatusOr<Plan> PlanJob(const QuantizeJobSpec& spec) {
  ASSIGN_OR_RETURN(std::unique_ptr<storage::Checkpoint> checkpoint,
                   storage::Checkpoint::Open(spec.model_dir));
  // Checked against the index before anything is planned per layer.
  ASSIGN_OR_RETURN(model::ModelConfig config, model::ReadModelConfig(*checkpoint));
  ASSIGN_OR_RETURN(PlanInput in, PlanInputFor(*checkpoint, config, spec));
  return PlanQuantizeJob(in);
}

std::string TaskDirName(const Task& task) {
  std::string name = task.layer >= 0 ? absl::StrCat("L", task.layer, "-", TaskKindName(task.kind))
                                     : std::string(TaskKindName(task.kind));
  if (task.shards > 1) absl::StrAppend(&name, "-", task.shard, "-of-", task.shards);
  return task.probe_pass ? "probe-" + name : name;
}

std::string LocalOutDir(const std::string& job_dir, const std::string& out_dir) {
  return storage::IsS3Location(out_dir) ? job_dir + "/out" : out_dir;
}

TaskOutput TaskOutputPaths(const std::string& job_dir, const std::string& out_dir,
                           const Task& task, int64_t epoch) {
  const std::string suffix = absl::StrCat(".e", epoch);
  const std::string out = LocalOutDir(job_dir, out_dir);
  switch (task.kind) {
    case TaskKind::kWrite:
      return {absl::StrCat(out, ".attempt", suffix), out};
    case TaskKind::kEvaluate:
      return {absl::StrCat(job_dir, "/attempts/report.json", suffix), out + "/report.json"};
    default:
      return {absl::StrCat(job_dir, "/attempts/", TaskDirName(task), suffix),
              absl::StrCat(job_dir, "/", TaskDirName(task))};
  }
}

std::vector<Task> TaskInputsOf(const Plan& plan, const Task& task) {
  // SLQ: the probe pass's first task at layer 0 makes the probe windows' inputs and the original
  // model's reference on them, which every probe task reads.
  int64_t probe_inputs = -1;
  for (const Task& t : plan.tasks) {
    if (t.probe_pass && t.layer == 0) {
      probe_inputs = t.id;
      break;
    }
  }
  // Whether `t` is an input of `task`.
  auto reads = [&](const Task& t) {
    if (t.id == task.id) return false;
    // The solve reads every probe table; the second pass's quantize, GSQ and write read the
    // solve's allocation (the bits of each unit, the report).
    if (task.kind == TaskKind::kSolve) return t.kind == TaskKind::kProbe;
    if (t.kind == TaskKind::kSolve) {
      return task.kind == TaskKind::kQuantize || task.kind == TaskKind::kGsq ||
             task.kind == TaskKind::kWrite;
    }
    if (t.probe_pass != task.probe_pass) return false;  // otherwise within one pass
    const bool previous_propagate = t.kind == TaskKind::kPropagate && t.layer == task.layer - 1 &&
                                    task.layer > 0;
    switch (task.kind) {
      case TaskKind::kCalibrate: return previous_propagate;
      case TaskKind::kQuantize: return t.kind == TaskKind::kCalibrate && t.layer == task.layer;
      case TaskKind::kGsq:
        return t.layer == task.layer &&
               (t.kind == TaskKind::kCalibrate || t.kind == TaskKind::kQuantize);
      case TaskKind::kPropagate:
        return previous_propagate ||
               (t.layer == task.layer && (t.kind == TaskKind::kCalibrate ||
                                          t.kind == TaskKind::kQuantize ||
                                          t.kind == TaskKind::kGsq));
      case TaskKind::kProbe:  // the layer's calibration, its probe inputs, the reference
        return previous_propagate || t.id == probe_inputs ||
               (t.kind == TaskKind::kCalibrate && t.layer == task.layer);
      case TaskKind::kWrite:  // the units as quantize and GSQ made them, propagate's reports
        return t.kind == TaskKind::kPropagate || t.kind == TaskKind::kQuantize ||
               t.kind == TaskKind::kGsq;
      case TaskKind::kEvaluate:
      case TaskKind::kPublish: return t.kind == TaskKind::kWrite;
      case TaskKind::kSolve: return false;  // above
    }
    return false;
  };
  std::vector<Task> inputs;
  for (const Task& t : plan.tasks) {
    if (reads(t)) inputs.push_back(t);
  }
  return inputs;
}

LeasedTask LeaseTask(const Plan& plan, const Task& task, const std::string& job_dir,
                     const std::string& out_dir, int64_t epoch) {
  LeasedTask leased;
  leased.task = task;
  for (const Task& t : TaskInputsOf(plan, task)) {
    leased.inputs.push_back({t, TaskOutputPaths(job_dir, out_dir, t, epoch).committed});
  }
  leased.output = TaskOutputPaths(job_dir, out_dir, task, epoch);
  return leased;
}

}  // namespace quant::tasks
