#include "worker/tasks/slq_tasks.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file.h"
#include "common/atomic_file.h"
#include "common/status.h"
#include "storage/object_store.h"
#include "worker/eval/eval_pipeline.h"
#include "job/slq_expert_model.h"
#include "job/slq_files.h"
#include "job/slq_job.h"
#include "job/scope.h"

namespace quant::tasks {
namespace {

namespace fs = std::filesystem;

// The probe cache's file name: the model's files and the probe quantizer's options
// (job/slq_job.h's ProbeCacheKey). A listing that fails gives a key of its own: the cache is
// missed, never wrongly hit.
std::string ProbeFingerprint(const JobState& job) {
  auto files = storage::DescribeFiles(job.model->checkpoint().store());
  return ProbeCacheKey(job.spec, files.ok() ? *files : "unlisted:" + std::to_string(getpid()));
}

absl::Status SaveProbeCache(const JobState& job) {
  if (job.probe_cache_file.empty()) return absl::OkStatus();
  return WriteFileAtomically(job.probe_cache_file, SerializeProbeCache(job.probes));
}

absl::Status LoadProbeCache(JobState& job) {
  if (job.probe_cache_file.empty() || !fs::exists(job.probe_cache_file)) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::string text, ReadWholeFile(job.probe_cache_file, "probe cache"));
  ASSIGN_OR_RETURN(job.probes, ParseProbeCache(text, job.probe_cache_file));
  return absl::OkStatus();
}

}  // namespace

absl::Status PrepareProbeUnits(JobState& job, bool use_cache) {
  const QuantizeJobSpec& spec = job.spec;
  ASSIGN_OR_RETURN(SlqUnits units, SlqUnitsOf(job.model->checkpoint(), spec));
  job.unit_params = std::move(units.params);
  job.unit_members = std::move(units.members);
  job.calibration_units = std::move(units.calibration_units);
  job.probes_cached = 0;
  if (use_cache && !spec.probe_cache_dir.empty()) {
    std::error_code ec;
    fs::create_directories(spec.probe_cache_dir, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat(spec.probe_cache_dir, ": cannot create the probe cache: ", ec.message()));
    }
    job.probe_cache_file = spec.probe_cache_dir + "/probes-" + ProbeFingerprint(job) + ".json";
    RETURN_IF_ERROR(LoadProbeCache(job));
  }
  job.probes_complete = true;
  std::vector<std::string> to_probe;
  for (const auto& [unit, params] : job.unit_params) to_probe.push_back(unit);
  to_probe.insert(to_probe.end(), job.calibration_units.begin(), job.calibration_units.end());
  for (const std::string& unit : to_probe) {
    for (int bits : spec.slq_bits) {
      const bool have = job.probes.count(unit) && job.probes[unit].count(bits);
      job.probes_complete = job.probes_complete && have;
      job.probes_cached += have ? 1 : 0;
    }
  }
  return absl::OkStatus();
}

absl::Status MakeProbeInputs(JobState& job, const at::Tensor& calibration_windows) {
  const QuantizeJobSpec& spec = job.spec;
  const int64_t n = std::min<int64_t>(spec.probe_windows, calibration_windows.size(0));
  job.probe_windows = calibration_windows.narrow(0, 0, n).contiguous();
  job.probe_hidden.clear();
  for (int64_t b = 0; b < n; b += spec.batch_windows) {
    ASSIGN_OR_RETURN(at::Tensor h, job.model->Embed(job.probe_windows.narrow(
                                       0, b, std::min<int64_t>(spec.batch_windows, n - b))));
    job.probe_hidden.push_back(h);
  }
  ASSIGN_OR_RETURN(job.probe_reference,
                   eval::RunToFinalHidden(*job.model, nullptr, job.probe_windows,
                                          spec.batch_windows, "probe reference", nullptr));
  return absl::OkStatus();
}

absl::Status StartProbePass(JobState& job, const at::Tensor& calibration_windows) {
  RETURN_IF_ERROR(PrepareProbeUnits(job, /*use_cache=*/true));
  for (const at::Tensor& h : job.hidden) job.first_hidden.push_back(h.clone());
  if (job.probes_complete) return absl::OkStatus();  // the probe pass has nothing to run
  return MakeProbeInputs(job, calibration_windows);
}

absl::Status RunProbeCalibrateTask(JobState& job, int layer) {
  if (job.probes_complete) return absl::OkStatus();
  return RunCalibrateTask(job, layer, /*capture_tokens=*/false);
}

absl::Status RunProbeTask(JobState& job) {
  if (job.probes_complete) return absl::OkStatus();
  LayerState& ls = job.layer;
  if (ls.capture == nullptr) return absl::FailedPreconditionError("probe before calibrate");
  const QuantizeJobSpec& spec = job.spec;
  const model::ModelConfig& config = job.model->config();
  auto units = SlqUnitsOfLayer(ls.names, spec.per_expert_bits);
  if (spec.per_expert_bits) {  // and the tied expert units that calibrate them
    for (const auto& [key, locals] : SlqUnitsOfLayer(ls.names, /*per_expert=*/false)) {
      if (key.starts_with("mlp.experts.")) units[key] = locals;
    }
  }
  // The rest of the model, original, loaded once for all of this layer's probes.
  std::vector<model::LayerWeights> rest;
  std::optional<model::Model::Head> head;
  bool any_new = false;
  for (const auto& [key, locals] : units) {
    const std::string unit = ls.prefix + key;
    for (int bits : spec.slq_bits) {
      if (job.probes[unit].count(bits)) continue;  // cached
      if (!head) {
        ASSIGN_OR_RETURN(head, job.model->LoadHead());
        for (int l = ls.index + 1; l < config.num_layers; ++l) {
          ASSIGN_OR_RETURN(model::LayerWeights w, job.model->LoadLayer(l, nullptr));
          rest.push_back(std::move(w));
        }
      }
      quant::QuantScheme scheme = job.scheme;
      scheme.bits = bits;
      // The unit's linears quantized as the job will start them, batched per shape.
      std::map<std::vector<int64_t>, std::vector<std::string>> by_shape;
      for (const std::string& local : locals) {
        by_shape[ls.weights.at(local).sizes().vec()].push_back(local);
      }
      model::LayerWeights probed = ls.weights;
      for (const auto& [shape, same] : by_shape) {
        std::vector<at::Tensor> ws, hs;
        for (const std::string& local : same) {
          int64_t tokens = 0;
          ws.push_back(ls.weights.at(local));
          hs.push_back(HessianOf(ls, local, &tokens));
        }
        ASSIGN_OR_RETURN(std::vector<quant::QuantizedWeight> qs,
                         QuantizeStart(job, ws, hs, scheme));
        for (size_t m = 0; m < same.size(); ++m) {
          probed.tensors[same[m]] = qs[m].Dequantize().to(job.model->device());
        }
      }
      std::vector<at::Tensor> finals;
      for (const at::Tensor& h0 : job.probe_hidden) {
        at::Tensor h = job.model->LayerForward(probed, h0, nullptr);
        for (const model::LayerWeights& w : rest) h = job.model->LayerForward(w, h, nullptr);
        finals.push_back(job.model->FinalNorm(*head, h));
      }
      ASSIGN_OR_RETURN(std::vector<eval::WindowStats> scored,
                       eval::ScoreHidden(*job.model, at::cat(finals, 0), job.model.get(),
                                         job.probe_reference, job.probe_windows,
                                         spec.batch_windows, nullptr));
      double positions = 0, kl = 0, ear = 0;
      for (const eval::WindowStats& w : scored) {
        positions += static_cast<double>(w.positions);
        kl += w.kl_sum;
        ear += w.ear_sum;
      }
      job.probes[unit][bits] = {kl / positions, 1.0 - ear / positions};
      ++job.probes_run;
      any_new = true;
    }
  }
  if (any_new) RETURN_IF_ERROR(SaveProbeCache(job));
  return absl::OkStatus();
}

absl::Status RunProbePropagateTask(JobState& job, int layer) {
  if (job.probes_complete) return absl::OkStatus();
  RETURN_IF_ERROR(EnsureLayerLoaded(job, layer));
  LayerState& ls = job.layer;
  for (at::Tensor& h : job.hidden) h = job.model->LayerForward(ls.weights, h, nullptr);
  for (at::Tensor& h : job.probe_hidden) h = job.model->LayerForward(ls.weights, h, nullptr);
  ls = LayerState();
  return absl::OkStatus();
}

absl::Status RunSolveTask(JobState& job, const SlqSolveFn& solve) {
  SlqUnits units;
  units.params = job.unit_params;
  units.members = job.unit_members;
  units.calibration_units = job.calibration_units;
  ASSIGN_OR_RETURN(SlqSolveResult solved, SolveSlq(job.spec, units, job.probes, job.probes_run,
                                                   job.probes_cached, solve));
  job.unit_bits = std::move(solved.unit_bits);
  job.solve_report = std::move(solved.report);
  job.solve_seconds = solved.seconds;
  // The quantize pass starts again from the embeddings.
  job.hidden = job.first_hidden;
  job.first_hidden.clear();
  job.probe_hidden.clear();
  job.probe_reference = at::Tensor();
  job.layer = LayerState();
  return absl::OkStatus();
}

absl::Status WriteSlqHeatmap(const nlohmann::json& solve_report, const std::string& png) {
  // unit "model.layers.3.mlp.experts.gate_up" -> layer 3, type "mlp.experts.gate_up"; per-expert
  // units ("mlp.experts.7.gate_up") count toward their type's cell as an average over experts.
  std::map<std::string, std::map<int, std::pair<double, int>>> sum_of;  // type -> layer -> sum, n
  int layers = 0;
  for (const nlohmann::json& u : solve_report.at("units")) {
    const std::string unit = u.at("unit");
    int layer = -1, consumed = 0;
    if (std::sscanf(unit.c_str(), "model.layers.%d.%n", &layer, &consumed) != 1 || consumed == 0) {
      continue;
    }
    std::string type = unit.substr(consumed);
    int expert = -1, tail = 0;
    if (std::sscanf(type.c_str(), "mlp.experts.%d.%n", &expert, &tail) == 1 && tail > 0) {
      type = "mlp.experts." + type.substr(tail) + " (mean)";
    }
    auto& cell = sum_of[type][layer];
    cell.first += u.at("bits").get<int>();
    cell.second += 1;
    layers = std::max(layers, layer + 1);
  }
  std::map<std::string, std::map<int, double>> bits_of;  // type -> layer -> bits
  for (const auto& [type, by_layer] : sum_of) {
    for (const auto& [layer, cell] : by_layer) bits_of[type][layer] = cell.first / cell.second;
  }
  if (bits_of.empty()) return absl::InvalidArgumentError("SLQ heat map: no per-layer units");
  const std::string dat = png + ".dat";
  {
    std::ofstream out(dat, std::ios::trunc);
    for (const auto& [type, by_layer] : bits_of) {
      for (int l = 0; l < layers; ++l) {
        auto it = by_layer.find(l);
        out << (it == by_layer.end() ? std::string("NaN") : absl::StrFormat("%.3g", it->second))
            << (l + 1 < layers ? " " : "\n");
      }
    }
    if (!out) return absl::DataLossError(absl::StrCat(dat, ": write failed"));
  }
  std::string ytics;
  int row = 0;
  for (const auto& [type, by_layer] : bits_of) {
    absl::StrAppend(&ytics, row ? ", " : "", "\"", type, "\" ", row);
    ++row;
  }
  const std::string script = absl::StrCat(
      "set terminal pngcairo noenhanced size ", 480 + 48 * layers, ",", 200 + 48 * row, "\n",
      "set output '", png, "'\n",
      "set title 'SLQ bits per unit (", solve_report.value("mode", ""), ", average ",
      absl::StrFormat("%.3f", solve_report.value("average_bits", 0.0)), ")'\n",
      "set xlabel 'layer'\nset xtics 1\nset ytics (", ytics, ")\n",
      "set xrange [-0.5:", layers - 0.5, "]\nset yrange [-0.5:", row - 0.5, "]\n",
      "set lmargin 28\nset cbrange [2:8]\nset cblabel 'bits'\n",
      "set palette defined (2 '#313695', 4 '#74add1', 6 '#fdae61', 8 '#a50026')\n",
      "plot '", dat, "' matrix with image notitle, '", dat,
      "' matrix using 1:2:(sprintf('%g',$3)) with labels tc rgb 'white' notitle\n");
  const std::string gp = png + ".gp";
  {
    std::ofstream out(gp, std::ios::trunc);
    out << script;
  }
  const int rc = std::system(absl::StrCat("gnuplot '", gp, "' 2>/dev/null").c_str());
  std::error_code ec;
  fs::remove(dat, ec);
  fs::remove(gp, ec);
  if (rc != 0) return absl::UnavailableError("gnuplot failed or is not installed");
  return absl::OkStatus();
}

}  // namespace quant::tasks

namespace quant::tasks {

nlohmann::json LayerProbesJson(const JobState& job, const std::string& layer_prefix,
                               int64_t probes_run) {
  return ProbeTableJson(job.probes, layer_prefix, probes_run);
}

absl::Status MergeLayerProbes(const nlohmann::json& j, const std::string& label, JobState& job) {
  ASSIGN_OR_RETURN(int64_t run, MergeProbeTableJson(j, label, &job.probes));
  job.probes_run += run;
  return absl::OkStatus();
}

nlohmann::json AllocationJson(const JobState& job) {
  return SlqAllocationJson(job.unit_bits, job.solve_report);
}

absl::Status RestoreAllocation(const nlohmann::json& j, const std::string& label, JobState& job) {
  return ParseSlqAllocationJson(j, label, &job.unit_bits, &job.solve_report);
}

}  // namespace quant::tasks
