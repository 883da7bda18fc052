#include "job/slq_job.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file.h"
#include "common/status.h"
#include "job/scope.h"
#include "job/slq_expert_model.h"
#include "job/slq_files.h"
#include "storage/object_store.h"

namespace quant::tasks {
namespace {

std::string Parent(const std::string& name) { return name.substr(0, name.rfind('.')); }

absl::StatusOr<SlqAllocation> ReadAllocation(const std::string& path,
                                             const std::vector<SlqUnitTable>& table) {
  ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path, "SLQ allocation"));
  return ParseAllocation(text, path, table);
}

}  // namespace

std::map<std::string, std::vector<std::string>> SlqUnitsOfLayer(
    const std::vector<std::string>& local_names, bool per_expert) {
  std::map<std::string, std::vector<std::string>> units;
  for (const std::string& local : local_names) {
    const std::string module = local.ends_with(".weight")
                                   ? local.substr(0, local.size() - std::string(".weight").size())
                                   : local;
    const std::string leaf = module.substr(module.rfind('.') + 1);
    std::string key = module;
    if (module.starts_with("mlp.experts.")) {
      // Tied: every expert of the layer in one unit; per expert: the expert's own.
      const std::string base = per_expert ? Parent(module) : std::string("mlp.experts");
      key = (leaf == "gate_proj" || leaf == "up_proj") ? base + ".gate_up" : base + "." + leaf;
    } else if (leaf == "gate_proj" || leaf == "up_proj") {
      key = Parent(module) + ".gate_up";
    } else if (leaf == "q_a_proj" || leaf == "kv_a_proj_with_mqa") {
      key = Parent(module) + ".qkv_a";
    }
    units[key].push_back(local);
  }
  return units;
}

absl::StatusOr<SlqUnits> SlqUnitsOf(const storage::Checkpoint& checkpoint,
                                    const QuantizeJobSpec& spec) {
  SlqUnits units;
  // The units and their sizes from the checkpoint's metadata (no weights read).
  std::map<int, std::vector<std::string>> locals_of_layer;
  for (const std::string& name : checkpoint.Names()) {
    int layer = -1;
    const storage::TensorInfo* info = checkpoint.Info(name);
    if (std::sscanf(name.c_str(), "model.layers.%d.", &layer) != 1 || info == nullptr ||
        info->shape.size() != 2 || !quant::InQuantScope(name, spec.scope)) {
      continue;
    }
    const std::string prefix = absl::StrCat("model.layers.", layer, ".");
    locals_of_layer[layer].push_back(name.substr(prefix.size()));
  }
  for (const auto& [layer, locals] : locals_of_layer) {
    const std::string prefix = absl::StrCat("model.layers.", layer, ".");
    if (spec.per_expert_bits) {
      for (const auto& [key, members] : SlqUnitsOfLayer(locals, /*per_expert=*/false)) {
        if (key.starts_with("mlp.experts.")) units.calibration_units.push_back(prefix + key);
      }
    }
    for (const auto& [key, members] : SlqUnitsOfLayer(locals, spec.per_expert_bits)) {
      int64_t params = 0;
      for (const std::string& local : members) {
        const storage::TensorInfo* info = checkpoint.Info(prefix + local);
        if (info == nullptr) {
          return absl::InternalError(absl::StrCat(prefix + local, ": listed but not found"));
        }
        params += info->shape[0] * info->shape[1];
        units.members[prefix + key].push_back(prefix + local);
      }
      units.params[prefix + key] = params;
    }
  }
  return units;
}

absl::StatusOr<SlqSolveResult> SolveSlq(const QuantizeJobSpec& spec, const SlqUnits& units,
                                        const ProbeTable& probes, int64_t probes_run,
                                        int64_t probes_cached, const SlqSolveFn& solve) {
  SlqSolveResult out;
  const bool target = spec.target_ear > 0;
  ASSIGN_OR_RETURN(const ExpertAggregation model, ParseExpertAggregation(spec.expert_aggregation));
  // The budget mode minimises the KL; the target mode the bits under the EAR model
  // (slq_files.h): the units' squared 1 - EAR add up, so a target E is the limit
  // sum ear_loss^2 <= ((1 - E) / kEarMargin)^2 on an additive table, like KL. Per-expert units
  // add up inside their layer as `model` says (slq_expert_model.h), for either quantity.
  std::vector<SlqUnitTable> kl_table, ear_table;  // ear_table: squared 1 - EAR
  for (const auto& [unit, params] : units.params) {
    SlqUnitTable row;
    row.unit = unit;
    row.params = params;
    SlqUnitTable ear_row = row;
    for (const auto& [bits, p] : probes.at(unit)) {
      if (std::find(spec.slq_bits.begin(), spec.slq_bits.end(), bits) == spec.slq_bits.end()) {
        continue;  // a cached bitwidth this job does not offer
      }
      row.bits.push_back(bits);
      row.loss.push_back(p.kl);
      ear_row.bits.push_back(bits);
      ear_row.loss.push_back(p.ear_loss * p.ear_loss);
    }
    kl_table.push_back(std::move(row));
    ear_table.push_back(std::move(ear_row));
  }
  std::map<std::string, std::map<int, double>> tied_kl, tied_ear;
  for (const std::string& unit : units.calibration_units) {
    for (const auto& [bits, p] : probes.at(unit)) {
      tied_kl[unit][bits] = p.kl;
      tied_ear[unit][bits] = p.ear_loss * p.ear_loss;
    }
  }
  const std::vector<ExpertGroup> kl_groups = GroupExperts(kl_table, tied_kl);
  const std::vector<ExpertGroup> ear_groups = GroupExperts(ear_table, tied_ear);
  const std::vector<SlqUnitTable>& table = target ? ear_table : kl_table;
  const std::vector<ExpertGroup>& groups = target ? ear_groups : kl_groups;
  if (target && spec.slq_allocation.empty()) {
    std::vector<int> least;  // every unit at its least-loss option
    for (const SlqUnitTable& row : table) {
      least.push_back(
          row.bits[std::min_element(row.loss.begin(), row.loss.end()) - row.loss.begin()]);
    }
    const double best = PredictedLoss(table, groups, model, least);
    if (1.0 - PredictedEarLoss(best) < spec.target_ear) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "--target-ear %g: out of reach: the candidate bitwidths give at most a predicted EAR "
          "of %.4f", spec.target_ear, 1.0 - PredictedEarLoss(best)));
    }
  }
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<SlqAllocation> solution =
      spec.slq_allocation.empty()
          ? SolveWithExpertModel(
                table, groups, model, target,
                target ? std::pow((1.0 - spec.target_ear) / kEarMargin, 2) : spec.slq_budget, solve)
          : ReadAllocation(spec.slq_allocation, table);

  out.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!solution.ok()) return solution.status();
  if (solution->bits.size() != table.size()) {
    return absl::InternalError("SLQ solve: one bitwidth per unit expected");
  }
  nlohmann::json unit_rows = nlohmann::json::array();
  double summed_kl = 0, predicted_ear_loss = 0;
  for (size_t i = 0; i < table.size(); ++i) {
    const int bits = solution->bits[i];
    const ProbeScore& p = probes.at(table[i].unit).at(bits);
    summed_kl += p.kl;
    predicted_ear_loss += p.ear_loss;
    for (const std::string& name : units.members.at(table[i].unit)) out.unit_bits[name] = bits;
    unit_rows.push_back({{"unit", table[i].unit}, {"bits", bits}, {"params", table[i].params},
                     {"probe_kl", p.kl}, {"probe_ear_loss", p.ear_loss}});
  }
  // Per layer and projection: the fitted exponent and how much the plain sum overstates.
  auto ratios = [](const std::map<int, double>& by_bits) {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& [bits, x] : by_bits) j[std::to_string(bits)] = x;
    return j;
  };
  nlohmann::json expert_groups = nlohmann::json::array();
  for (size_t g = 0; g < kl_groups.size(); ++g) {
    nlohmann::json row = {{"tied_unit", kl_groups[g].tied_unit},
                          {"experts", kl_groups[g].rows.size()},
                          {"kl_power", kl_groups[g].power},
                          {"kl_fit_rms_log", kl_groups[g].fit_rms_log},
                          {"kl_sum_over_tied", ratios(SumOverTied(kl_table, kl_groups[g]))}};
    if (g < ear_groups.size() && ear_groups[g].tied_unit == kl_groups[g].tied_unit) {
      row["ear2_power"] = ear_groups[g].power;
      row["ear2_fit_rms_log"] = ear_groups[g].fit_rms_log;
      row["ear2_sum_over_tied"] = ratios(SumOverTied(ear_table, ear_groups[g]));
    }
    expert_groups.push_back(std::move(row));
  }
  const double predicted_kl = PredictedLoss(kl_table, kl_groups, model, solution->bits);
  const double squared_ear_losses = PredictedLoss(ear_table, ear_groups, model, solution->bits);
  out.report = {
      {"mode", !spec.slq_allocation.empty() ? "allocation" : target ? "target-ear" : "budget"},
      {"budget_bits", target ? nlohmann::json() : nlohmann::json(spec.slq_budget)},
      {"target_ear", target ? nlohmann::json(spec.target_ear) : nlohmann::json()},
      {"candidate_bits", spec.slq_bits},
      {"average_bits", solution->average_bits},
      {"predicted_kl", predicted_kl},
      {"predicted_kl_summed", summed_kl},
      {"predicted_ear", 1.0 - PredictedEarLoss(squared_ear_losses)},
      {"ear_model", absl::StrFormat("%.2f sqrt(sum of the units' squared 1 - EAR)", kEarMargin)},
      {"expert_aggregation", ExpertAggregationName(model)},
      {"expert_groups", expert_groups},
      {"predicted_ear_summed", 1.0 - predicted_ear_loss},
      {"exact", solution->exact},
      {"optimality_gap", solution->optimality_gap},
      {"solve_seconds", out.seconds},
      {"probes_run", probes_run},
      {"probes_cached", probes_cached},
      {"probe_windows", spec.probe_windows},
      {"allocation_file", spec.slq_allocation},
      {"units", unit_rows},
      {"probes", nlohmann::json::parse(SerializeProbeCache(probes))["probes"]}};
  return out;
}

nlohmann::json ProbeTableJson(const ProbeTable& probes, const std::string& layer_prefix,
                              int64_t probes_run) {
  ProbeTable layer;
  for (const auto& [unit, by_bits] : probes) {
    if (unit.starts_with(layer_prefix)) layer[unit] = by_bits;
  }
  nlohmann::json j = nlohmann::json::parse(SerializeProbeCache(layer));  // {"probes": ...}
  j["probes_run"] = probes_run;
  return j;
}

absl::StatusOr<int64_t> MergeProbeTableJson(const nlohmann::json& j, const std::string& label,
                                            ProbeTable* probes) {
  if (!j.is_object() || !j.contains("probes") || !j["probes"].is_object() ||
      !j.value("probes_run", nlohmann::json()).is_number_integer()) {
    return absl::DataLossError(absl::StrCat(label, ": not a probe task's table"));
  }
  ASSIGN_OR_RETURN(const ProbeTable table,
                   ParseProbeCache(nlohmann::json{{"probes", j["probes"]}}.dump(), label));
  for (const auto& [unit, by_bits] : table) {
    for (const auto& [bits, score] : by_bits) (*probes)[unit][bits] = score;
  }
  return j["probes_run"].get<int64_t>();
}

nlohmann::json SlqAllocationJson(const std::map<std::string, int>& unit_bits,
                                 const nlohmann::json& report) {
  return {{"unit_bits", unit_bits}, {"solve_report", report}};
}

absl::Status ParseSlqAllocationJson(const nlohmann::json& j, const std::string& label,
                                    std::map<std::string, int>* unit_bits,
                                    nlohmann::json* report) {
  if (!j.is_object() || !j.contains("unit_bits") || !j["unit_bits"].is_object() ||
      !j.contains("solve_report")) {
    return absl::DataLossError(absl::StrCat(label, ": not an SLQ allocation"));
  }
  unit_bits->clear();
  for (const auto& [name, bits] : j["unit_bits"].items()) {
    if (!bits.is_number_integer()) {
      return absl::DataLossError(absl::StrCat(label, ": unit ", name, ": bits not an integer"));
    }
    (*unit_bits)[name] = bits.get<int>();
  }
  *report = j["solve_report"];
  return absl::OkStatus();
}

std::string ProbeCacheKey(const QuantizeJobSpec& s, const std::string& model_files) {
  std::string key = storage::IsS3Location(s.model_dir)
                        ? s.model_dir
                        : std::filesystem::weakly_canonical(s.model_dir).string();
  absl::StrAppend(&key, "|", model_files);
  // The names the spec's choices had as strings: caches written before they were enums still hit.
  absl::StrAppend(&key, "|", s.method == Method::kRtn ? "rtn" : "gptq", "|",
                  std::string(NameOf(s.grid)), "|", s.group_size, "|", s.channel_fallback, "|",
                  std::string(NameOf(s.scope)), "|", s.calib_path, "|", s.calib_tokens, "|",
                  s.window_tokens, "|", s.probe_windows, "|", s.batch_windows, "|");
  absl::StrAppend(&key, absl::StrFormat("%.6g", s.damp), "|", s.act_order, "|",
                  s.mse_scale_search);
  // --calib-samples picks other windows; appended only when set, so existing caches still hit.
  if (s.calib_samples > 0) absl::StrAppend(&key, "|samples ", s.calib_samples);
  return absl::StrFormat("%016x", std::hash<std::string>{}(key));
}

bool CoversLayer(const ProbeTable& table, const SlqUnits& units, const std::string& layer_prefix,
                 const std::vector<int>& bits) {
  std::vector<std::string> wanted = units.calibration_units;
  for (const auto& [unit, params] : units.params) wanted.push_back(unit);
  for (const std::string& unit : wanted) {
    if (!unit.starts_with(layer_prefix)) continue;
    auto it = table.find(unit);
    if (it == table.end()) return false;
    for (int b : bits) {
      if (!it->second.count(b)) return false;
    }
  }
  return true;
}

}  // namespace quant::tasks
