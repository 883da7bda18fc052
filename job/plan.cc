#include "job/plan.h"

#include "absl/strings/str_cat.h"

namespace quant::tasks {

const char* TaskKindName(TaskKind kind) {
  switch (kind) {
    case TaskKind::kCalibrate: return "calibrate";
    case TaskKind::kProbe: return "probe";
    case TaskKind::kSolve: return "solve";
    case TaskKind::kQuantize: return "quantize";
    case TaskKind::kGsq: return "gsq";
    case TaskKind::kPropagate: return "propagate";
    case TaskKind::kWrite: return "write";
    case TaskKind::kEvaluate: return "evaluate";
    case TaskKind::kPublish: return "publish";
  }
  return "?";
}

bool ParseTaskKind(std::string_view name, TaskKind* kind) {
  for (TaskKind k : {TaskKind::kCalibrate, TaskKind::kProbe, TaskKind::kSolve, TaskKind::kQuantize,
                     TaskKind::kGsq, TaskKind::kPropagate, TaskKind::kWrite, TaskKind::kEvaluate,
                     TaskKind::kPublish}) {
    if (name == TaskKindName(k)) {
      *kind = k;
      return true;
    }
  }
  return false;
}

std::string Task::Name() const {
  std::string name = layer >= 0 ? absl::StrCat("L", layer, "/", TaskKindName(kind))
                                : std::string(TaskKindName(kind));
  if (shards > 1) absl::StrAppend(&name, "[", shard, "/", shards, "]");
  if (gang > 1) absl::StrAppend(&name, "[x", gang, "]");
  return probe_pass ? "probe-pass/" + name : name;
}

nlohmann::json Plan::ToJson() const {
  nlohmann::json out = nlohmann::json::array();
  for (const Task& t : tasks) {
    out.push_back({{"id", t.id}, {"name", t.Name()}, {"kind", TaskKindName(t.kind)},
                   {"layer", t.layer}, {"shard", t.shard}, {"shards", t.shards},
                   {"gang", t.gang}, {"probe_pass", t.probe_pass},
                   {"deps", t.deps}});
  }
  return out;
}

Plan PlanQuantizeJob(const PlanInput& in) {
  Plan plan;
  auto add = [&](TaskKind kind, int layer, std::vector<int64_t> deps, int shard = 0,
                 int shards = 1) {
    Task t;
    t.id = static_cast<int64_t>(plan.tasks.size());
    t.kind = kind;
    t.layer = layer;
    t.shard = shard;
    t.shards = shards;
    t.deps = std::move(deps);
    plan.tasks.push_back(t);
    return t.id;
  };
  // Each layer's inputs come from the quantized layers before it: every task of layer L
  // depends, through its calibrate task, on the propagate task of layer L - 1.
  int64_t previous = -1;
  auto after_previous = [&] { return previous >= 0 ? std::vector<int64_t>{previous} : std::vector<int64_t>{}; };
  auto has_units = [&](int layer) {
    return layer < static_cast<int>(in.layer_has_units.size()) && in.layer_has_units[layer];
  };
  // SLQ: a first pass over the original model probes every unit, then one solve (DESIGN.md
  // section 4: all probes before any quantization; the calibration statistics are recomputed
  // in the second pass, whose inputs come from quantized layers).
  // The probe pass's chain is calibrate -> propagate per layer (the original model: a
  // propagate needs no probe; layer 0's reads the probe inputs its calibrate made), so the
  // probes of all layers can run at once on as many workers; the solve waits for every probe.
  if (in.slq) {
    std::vector<int64_t> probes;
    for (int layer = 0; layer < in.num_layers; ++layer) {
      std::vector<int64_t> before = after_previous();
      if (has_units(layer)) {
        const int64_t calibrate = add(TaskKind::kCalibrate, layer, before);
        plan.tasks[calibrate].probe_pass = true;
        probes.push_back(add(TaskKind::kProbe, layer, {calibrate}));
        plan.tasks[probes.back()].probe_pass = true;
        before = {calibrate};
      }
      previous = add(TaskKind::kPropagate, layer, before);
      plan.tasks[previous].probe_pass = true;
    }
    probes.push_back(previous);
    previous = add(TaskKind::kSolve, -1, probes);
  }
  for (int layer = 0; layer < in.num_layers; ++layer) {
    const bool units = has_units(layer);
    const bool moe = layer < static_cast<int>(in.layer_is_moe.size()) && in.layer_is_moe[layer];
    // Expert parallel: the experts' owners calibrate and propagate the layer together.
    const int gang = units && moe ? std::max(1, in.expert_shards) : 1;
    std::vector<int64_t> before_propagate = after_previous();
    if (units) {
      const int64_t calibrate = add(TaskKind::kCalibrate, layer, after_previous());
      plan.tasks[calibrate].gang = gang;
      const int64_t quantize = add(TaskKind::kQuantize, layer, {calibrate});
      before_propagate = {quantize};
      if (in.gsq) {
        const int shards = moe ? std::max(1, in.expert_shards) : 1;
        before_propagate.clear();
        for (int s = 0; s < shards; ++s) {
          before_propagate.push_back(add(TaskKind::kGsq, layer, {quantize}, s, shards));
        }
      }
    }
    previous = add(TaskKind::kPropagate, layer, before_propagate);
    plan.tasks[previous].gang = gang;
  }
  const int64_t write = add(TaskKind::kWrite, -1, after_previous());
  std::vector<int64_t> written = {write};
  if (in.evaluate) written.push_back(add(TaskKind::kEvaluate, -1, {write}));
  if (in.publish) add(TaskKind::kPublish, -1, written);
  return plan;
}

}  // namespace quant::tasks
