// RunQuantizeJob: calibration windows, then per layer calibrate (Hessians, expert tokens and
// full-precision targets with the original layer), quantize (RTN, GPTQ, GSQ), propagate (the
// quantized layer makes the next layer's inputs); then export and evaluate the written files.
#include "worker/tasks/quantize_job.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "worker/eval/eval_job.h"
#include "worker/eval/eval_pipeline.h"
#include "worker/model/calibration.h"
#include "worker/model/model.h"
#include "worker/quant/export.h"
#include "worker/quant/gptq.h"
#include "worker/quant/gsq.h"
#include "worker/quant/quantizer.h"
#include "worker/quant/scope.h"
#include "worker/tokenizer/tokenizer.h"

namespace quant::tasks {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Resets the kernel's resident high-water mark so each phase reports its own peak.
void ResetPeakRss() {
  std::ofstream clear("/proc/self/clear_refs");
  if (clear) clear << "5";
}

// Collects Hessians, and (for GSQ's expert-output objective) each expert's routed inputs and
// full-precision outputs.
class LayerCapture : public model::ForwardObserver {
 public:
  explicit LayerCapture(bool capture_tokens) : capture_tokens_(capture_tokens) {}
  void OnLinearInput(int layer, const std::string& linear, const at::Tensor& x) override {
    hessians_.OnLinearInput(layer, linear, x);
    if (!capture_tokens_) return;
    int expert = -1;
    if (ParseExpertGate(linear, &expert)) {
      inputs_[expert].push_back(x.to(at::kFloat).reshape({-1, x.size(-1)}).clone());
    }
  }
  void OnExpertOutput(int layer, int expert, const at::Tensor& token_index,
                      const at::Tensor& y) override {
    if (capture_tokens_) outputs_[expert].push_back(y.to(at::kFloat).clone());
  }
  const model::HessianCollector& hessians() const { return hessians_; }
  at::Tensor Inputs(int expert, int64_t hidden) const { return Cat(inputs_, expert, hidden); }
  at::Tensor Outputs(int expert, int64_t hidden) const { return Cat(outputs_, expert, hidden); }

 private:
  static bool ParseExpertGate(const std::string& linear, int* expert) {
    int e = -1;
    char tail[32] = {0};
    if (std::sscanf(linear.c_str(), "mlp.experts.%d.%31s", &e, tail) == 2 &&
        std::string(tail) == "gate_proj") {
      *expert = e;
      return true;
    }
    return false;
  }
  static at::Tensor Cat(const std::map<int, std::vector<at::Tensor>>& m, int e, int64_t hidden) {
    auto it = m.find(e);
    if (it == m.end() || it->second.empty()) return at::zeros({0, hidden}, at::kFloat);
    return at::cat(it->second, 0);
  }
  bool capture_tokens_;
  model::HessianCollector hessians_;
  std::map<int, std::vector<at::Tensor>> inputs_, outputs_;
};

struct UnitReport {
  std::string name;
  int bits = 0;
  std::string grid;
  int group_size = 0;
  std::string method;
  double proxy_loss = 0;       // tr(dW H dW^T) of the final weight (H of the calibration)
  double gsq_loss_before = -1;  // GSQ objective with GPTQ's codes (-1: no GSQ)
  double gsq_loss_after = -1;
  double changed_fraction = 0;
  int64_t tokens = 0;
  bool fallback = false;
  double seconds = 0;
};

double ProxyLoss(const at::Tensor& w, const at::Tensor& wq, const at::Tensor& h) {
  at::Tensor dw = wq - w;
  at::Tensor hh = h.defined() ? h : at::eye(w.size(1), at::kFloat);
  return (at::matmul(dw, hh) * dw).sum().item<double>();
}

std::string ExpertPrefix(const std::string& name) {
  // "model.layers.1.mlp.experts.3.gate_proj.weight" -> "model.layers.1.mlp.experts.3"
  const size_t pos = name.rfind('.', name.size() - sizeof(".weight"));
  return name.substr(0, pos);
}

absl::StatusOr<std::string> ReadFile(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read ", what));
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  if (s.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": empty ", what));
  return s;
}

}  // namespace

nlohmann::json QuantizeJobSpec::ToJson() const {
  return {{"model", model_dir},       {"method", method},
          {"bits", bits},             {"grid", grid},
          {"group_size", group_size}, {"channel_fallback", channel_fallback},
          {"scope", scope},           {"calib", calib_path},
          {"calib_tokens", calib_tokens}, {"window_tokens", window_tokens},
          {"steps", steps},           {"objective", objective},
          {"export", export_format},  {"seed", seed},
          {"damp", damp},             {"act_order", act_order},
          {"mse_scale_search", mse_scale_search}, {"batch_windows", batch_windows},
          {"calib_inputs", calib_inputs}};
}

absl::Status ValidateSpec(const QuantizeJobSpec& s) {
  if (s.method != "rtn" && s.method != "gptq" && s.method != "gsq") {
    return absl::InvalidArgumentError(
        absl::StrCat("--method: '", s.method, "' is not one of rtn, gptq, gsq"));
  }
  quant::QuantScheme scheme;
  scheme.bits = s.bits;
  scheme.group_size = s.group_size;
  if (s.bits < quant::kMinBits || s.bits > quant::kMaxBits) {
    return absl::InvalidArgumentError(absl::StrCat("--bits: ", s.bits, " is outside 2..8"));
  }
  if (s.group_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("--group: ", s.group_size, " must be > 0"));
  }
  if (s.grid != "sym" && s.grid != "asym") {
    return absl::InvalidArgumentError(absl::StrCat("--grid: '", s.grid, "' is not one of sym, asym"));
  }
  RETURN_IF_ERROR(quant::ParseScope(s.scope).status());
  RETURN_IF_ERROR(quant::ParseGsqObjective(s.objective).status());
  RETURN_IF_ERROR(quant::ParseExportFormat(s.export_format).status());
  if (s.steps < 0 || s.steps > 1000000) {
    return absl::InvalidArgumentError(absl::StrCat("--steps: ", s.steps, " is out of range"));
  }
  if (s.calib_tokens < s.window_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("--calib-tokens: ", s.calib_tokens,
                                                   " is less than one window of ",
                                                   s.window_tokens));
  }
  if (s.batch_windows <= 0) return absl::InvalidArgumentError("--batch must be > 0");
  if (s.calib_inputs != "quantized" && s.calib_inputs != "original") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--calib-inputs: '", s.calib_inputs, "' is not one of quantized, original"));
  }
  if (s.threads < 0) return absl::InvalidArgumentError("--threads must be >= 0");
  if (s.out_dir.empty()) return absl::InvalidArgumentError("--out is required");
  if (fs::exists(s.out_dir) && !s.overwrite) {
    return absl::AlreadyExistsError(
        absl::StrCat(s.out_dir, ": output directory already exists (pass --overwrite)"));
  }
  if (fs::weakly_canonical(s.out_dir) == fs::weakly_canonical(s.model_dir)) {
    return absl::InvalidArgumentError(absl::StrCat(s.out_dir, ": output would replace the model"));
  }
  return absl::OkStatus();
}

absl::StatusOr<QuantizeJobResult> RunQuantizeJob(const QuantizeJobSpec& spec,
                                                 const ProgressFn& progress) {
  RETURN_IF_ERROR(ValidateSpec(spec));
  QuantizeJobResult result;
  std::map<std::string, PhaseTiming> phases;
  auto add_phase = [&](const std::string& name, double seconds) {
    PhaseTiming& p = phases[name];
    p.phase = name;
    p.seconds += seconds;
    p.peak_rss_bytes = std::max(p.peak_rss_bytes, eval::PeakRssBytes());
  };

  quant::QuantScheme scheme;
  scheme.bits = spec.bits;
  scheme.grid = spec.grid == "sym" ? quant::Grid::kSymmetric : quant::Grid::kAsymmetric;
  scheme.group_size = spec.group_size;
  ASSIGN_OR_RETURN(quant::Scope scope, quant::ParseScope(spec.scope));
  ASSIGN_OR_RETURN(quant::GsqObjective objective, quant::ParseGsqObjective(spec.objective));
  ASSIGN_OR_RETURN(quant::ExportFormat format, quant::ParseExportFormat(spec.export_format));

  ASSIGN_OR_RETURN(std::unique_ptr<model::Model> model,
                   model::Model::Open(spec.model_dir, model::ComputeDType::kF32));
  const model::ModelConfig& config = model->config();
  // Every in-scope linear must have a grid before any work starts.
  for (const std::string& name : model->checkpoint().Names()) {
    if (!quant::InQuantScope(name, scope)) continue;
    const storage::TensorInfo* info = model->checkpoint().Info(name);
    if (info == nullptr || info->shape.size() != 2) continue;
    if (info->shape[1] % spec.group_size != 0 && !spec.channel_fallback) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": ", info->shape[1], " input columns are not a multiple of --group ",
          spec.group_size, " and --no-channel-fallback was given"));
    }
  }
  ASSIGN_OR_RETURN(std::unique_ptr<tokenizer::Tokenizer> tok,
                   tokenizer::Tokenizer::FromFile(spec.model_dir + "/tokenizer.json"));
  ASSIGN_OR_RETURN(std::string calib_text, ReadFile(spec.calib_path, "calibration file"));
  if (spec.evaluate) {
    RETURN_IF_ERROR(ReadFile(spec.eval_text, "evaluation text").status());
  }
  // --threads sizes our fused kernels only: ATen's intra-op pool stays as it is, since OpenBLAS
  // already runs its own threads (OPENBLAS_NUM_THREADS) and two pools on two cores spin against
  // each other (calibrating tiny-qwen3-moe took 183 s with at::set_num_threads(2), 15 s
  // without, on a quieter machine).

  // Calibration windows: the shared recipe (BOS + 255 tokens), as many as calib_tokens asks.
  ResetPeakRss();
  auto t0 = Clock::now();
  std::vector<int32_t> ids = tok->Encode(calib_text, /*add_special_tokens=*/false);
  const int64_t want_windows = spec.calib_tokens / spec.window_tokens;
  const int64_t have_windows = static_cast<int64_t>(ids.size()) / (spec.window_tokens - 1);
  if (have_windows < want_windows) {
    return absl::InvalidArgumentError(absl::StrCat(
        spec.calib_path, ": ", ids.size(), " tokens give ", have_windows, " windows of ",
        spec.window_tokens, ", fewer than the ", want_windows, " that --calib-tokens ",
        spec.calib_tokens, " asks for"));
  }
  const int64_t bos = model->checkpoint().config().value("bos_token_id", 0);
  ASSIGN_OR_RETURN(at::Tensor windows, eval::MakeWindows(ids, spec.window_tokens, bos, spec.calib_path));
  windows = windows.narrow(0, 0, want_windows).contiguous();
  std::vector<at::Tensor> hidden;
  for (int64_t b = 0; b < want_windows; b += spec.batch_windows) {
    ASSIGN_OR_RETURN(at::Tensor h, model->Embed(windows.narrow(
                                       0, b, std::min<int64_t>(spec.batch_windows, want_windows - b))));
    hidden.push_back(h);
  }
  add_phase("calibrate", Since(t0));

  std::map<std::string, quant::QuantizedWeight> units;
  std::vector<UnitReport> reports;
  quant::GptqOptions gptq_options;
  gptq_options.damp = spec.damp;
  gptq_options.act_order = spec.act_order;
  gptq_options.mse_scale_search = spec.mse_scale_search;
  quant::GptqQuantizer gptq(gptq_options);
  quant::RtnQuantizer rtn;
  const bool gsq = spec.method == "gsq";
  double changed_sum = 0, ratio_sum = 0;
  int64_t gsq_units = 0;

  for (int layer = 0; layer < config.num_layers; ++layer) {
    ASSIGN_OR_RETURN(model::LayerWeights weights, model->LoadLayer(layer, nullptr));
    const std::string prefix = absl::StrCat("model.layers.", layer, ".");
    std::vector<std::string> names;
    for (const auto& [local, t] : weights.tensors) {
      if (t.dim() == 2 && quant::InQuantScope(prefix + local, scope)) names.push_back(local);
    }
    if (!names.empty()) {
      // 1. Calibrate with the original layer on inputs from the quantized layers before it.
      ResetPeakRss();
      t0 = Clock::now();
      const bool capture_tokens = gsq && objective == quant::GsqObjective::kExpertOutput &&
                                  config.IsMoeLayer(layer);
      LayerCapture capture(capture_tokens);
      for (const at::Tensor& h : hidden) model->LayerForward(weights, h, &capture);
      add_phase("calibrate", Since(t0));
      if (progress) progress("calibrate", layer + 1, config.num_layers);

      // 2. Quantize: RTN/GPTQ per unit (GSQ starts from GPTQ).
      ResetPeakRss();
      t0 = Clock::now();
      const auto& stats = capture.hessians().stats();
      std::map<std::string, at::Tensor> hessian_of;
      // Units of one batch share a shape: one projection of every routed expert, or one linear.
      std::map<std::string, std::vector<std::string>> batches;
      for (const std::string& local : names) {
        std::string key = local;
        if (local.starts_with("mlp.experts.")) {
          key = "experts/" + local.substr(local.rfind('.', local.size() - 8) + 1);
        }
        batches[key].push_back(local);
      }
      for (const auto& [key, members] : batches) {
        std::vector<at::Tensor> ws, hs;
        std::vector<UnitReport> batch_reports;
        for (const std::string& local : members) {
          const std::string module = local.substr(0, local.size() - std::string(".weight").size());
          auto it = stats.find(prefix + module);
          UnitReport r;
          r.name = prefix + local;
          r.bits = spec.bits;
          r.grid = spec.grid;
          r.method = spec.method;
          at::Tensor h;
          if (it != stats.end() && it->second.tokens > 0) {
            h = it->second.Hessian();
            r.tokens = it->second.tokens;
          } else {
            r.fallback = true;  // no calibration token reached it: H = I
            if (local.find("experts.") != std::string::npos &&
                local.ends_with("gate_proj.weight")) {
              result.fallback_experts.push_back(ExpertPrefix(r.name));
            }
          }
          hessian_of[local] = h;
          ws.push_back(weights.at(local));
          hs.push_back(h);
          batch_reports.push_back(r);
        }
        const auto batch_start = Clock::now();
        std::vector<quant::QuantizedWeight> qs;
        if (spec.method == "rtn") {
          for (const at::Tensor& w : ws) {
            ASSIGN_OR_RETURN(quant::QuantizedWeight q, rtn.Quantize(w, scheme, quant::UnitContext{}));
            qs.push_back(std::move(q));
          }
        } else {
          auto batch = gptq.QuantizeBatch(ws, hs, scheme);
          if (!batch.ok()) {
            return absl::Status(batch.status().code(),
                                absl::StrCat(prefix, key, ": ", batch.status().message()));
          }
          qs = std::move(*batch);
        }
        const double per_unit = Since(batch_start) / static_cast<double>(members.size());
        for (size_t m = 0; m < members.size(); ++m) {
          batch_reports[m].group_size = qs[m].group_size;
          batch_reports[m].seconds = per_unit;
          units[batch_reports[m].name] = std::move(qs[m]);
          reports.push_back(batch_reports[m]);
        }
      }
      add_phase(spec.method == "rtn" ? "rtn" : "gptq", Since(t0));
      if (progress) progress(spec.method == "rtn" ? "rtn" : "gptq", layer + 1, config.num_layers);

      // 3. GSQ: all routed experts of the layer jointly; other linears one by one, layer-local.
      if (gsq) {
        ResetPeakRss();
        t0 = Clock::now();
        quant::GsqOptions gsq_options;
        gsq_options.steps = spec.steps;
        gsq_options.seed = spec.seed + static_cast<uint64_t>(layer) * 1000003u;
        gsq_options.threads = std::max(1, spec.threads);
        gsq_options.batch_tokens = int64_t{spec.batch_windows} * spec.window_tokens;
        std::vector<std::vector<std::string>> jobs;  // each: the member names of one run
        std::vector<std::string> expert_families[3];
        const char* kProj[3] = {"gate_proj", "up_proj", "down_proj"};
        for (const std::string& local : names) {
          bool is_expert = false;
          for (int f = 0; f < 3; ++f) {
            if (local.starts_with("mlp.experts.") &&
                local.ends_with(std::string(kProj[f]) + ".weight")) {
              expert_families[f].push_back(local);
              is_expert = true;
            }
          }
          if (!is_expert) jobs.push_back({local});
        }
        auto run_gsq = [&](const std::vector<std::vector<std::string>>& fams,
                           const std::vector<std::string>& fam_names,
                           const quant::GsqExpertTokens* tokens,
                           quant::GsqObjective obj) -> absl::Status {
          std::vector<quant::GsqFamily> families;
          for (size_t f = 0; f < fams.size(); ++f) {
            quant::GsqFamily fam;
            fam.name = fam_names[f];
            for (const std::string& local : fams[f]) {
              fam.init.push_back(units.at(prefix + local));
              fam.original.push_back(weights.at(local));
              fam.hessian.push_back(hessian_of.at(local));
            }
            families.push_back(std::move(fam));
          }
          quant::GsqOptions o = gsq_options;
          o.objective = obj;
          ASSIGN_OR_RETURN(quant::GsqResult g, quant::RunGsq(families, tokens, scheme, o));
          int64_t members = 0;
          for (const auto& f : fams) members += static_cast<int64_t>(f.size());
          for (size_t f = 0; f < fams.size(); ++f) {
            for (size_t m = 0; m < fams[f].size(); ++m) {
              const std::string name = prefix + fams[f][m];
              units[name] = g.families[f][m];
              for (UnitReport& r : reports) {
                if (r.name != name) continue;
                const quant::GsqMemberReport& gr = g.reports[f][m];
                r.method = "gsq";
                r.gsq_loss_before = gr.loss_before;
                r.gsq_loss_after = gr.loss_after;
                r.changed_fraction = gr.changed_fraction;
                r.seconds += g.seconds / std::max<int64_t>(1, members);
                changed_sum += gr.changed_fraction;
                if (gr.loss_before > 0) ratio_sum += gr.loss_after / gr.loss_before;
                ++gsq_units;
              }
            }
          }
          return absl::OkStatus();
        };
        if (!expert_families[0].empty()) {
          quant::GsqExpertTokens tokens;
          if (objective == quant::GsqObjective::kExpertOutput) {
            for (const std::string& local : expert_families[0]) {
              int e = -1;
              std::sscanf(local.c_str(), "mlp.experts.%d.", &e);
              tokens.inputs.push_back(capture.Inputs(e, config.hidden_size));
              tokens.targets.push_back(capture.Outputs(e, config.hidden_size));
            }
            tokens.layer_tokens = want_windows * spec.window_tokens;
          }
          RETURN_IF_ERROR(run_gsq({expert_families[0], expert_families[1], expert_families[2]},
                                  {"gate_proj", "up_proj", "down_proj"}, &tokens, objective));
        }
        for (const auto& job : jobs) {
          RETURN_IF_ERROR(run_gsq({job}, {job[0]}, nullptr, quant::GsqObjective::kLayerLocal));
        }
        add_phase("gsq", Since(t0));
        if (progress) progress("gsq", layer + 1, config.num_layers);
      }
      for (UnitReport& r : reports) {
        if (!r.name.starts_with(prefix)) continue;
        const std::string local = r.name.substr(prefix.size());
        r.proxy_loss =
            ProxyLoss(weights.at(local), units.at(r.name).Dequantize(), hessian_of.at(local));
      }
      // Replace the layer's weights by their quantized versions for propagation.
      if (spec.calib_inputs == "quantized") {
        for (const std::string& local : names) {
          weights.tensors[local] = units.at(prefix + local).Dequantize();
        }
      }
    }
    // 4. Propagate: the quantized layer makes the next layer's inputs.
    ResetPeakRss();
    t0 = Clock::now();
    for (at::Tensor& h : hidden) h = model->LayerForward(weights, h, nullptr);
    add_phase("propagate", Since(t0));
  }
  hidden.clear();

  // 5. Write.
  ResetPeakRss();
  t0 = Clock::now();
  quant::ExportOptions export_options;
  export_options.format = format;
  export_options.out_dir = spec.out_dir;
  export_options.overwrite = spec.overwrite;
  export_options.job_options = spec.ToJson();
  ASSIGN_OR_RETURN(quant::ExportStats stats,
                   quant::ExportCheckpoint(model->checkpoint(), units, export_options));
  add_phase("write", Since(t0));
  result.out_dir = spec.out_dir;
  result.units = static_cast<int64_t>(units.size());
  result.bits_per_quantized_param_true = stats.bits_per_quantized_param_true;
  result.bits_per_quantized_param_stored = stats.bits_per_quantized_param_stored;
  result.bits_per_param_true = stats.bits_per_param_true;
  result.bits_per_param_stored = stats.bits_per_param_stored;
  result.container_note = stats.container_note;
  if (gsq_units > 0) {
    result.gsq_mean_changed_fraction = changed_sum / gsq_units;
    result.gsq_mean_loss_ratio = ratio_sum / gsq_units;
  }

  // 6. Evaluate the written checkpoint against the original.
  if (spec.evaluate) {
    ResetPeakRss();
    t0 = Clock::now();
    eval::EvalJobOptions eo;
    eo.model_dir = spec.out_dir;
    eo.reference_dir = spec.model_dir;
    eo.text_path = spec.eval_text;
    eo.batch_windows = spec.batch_windows;
    ASSIGN_OR_RETURN(eval::EvalJobResult er,
                     eval::RunEvalJob(eo, [&](const std::string& phase, int64_t d, int64_t t) {
                       if (progress) progress("eval " + phase, d, t);
                     }));
    result.evaluated = true;
    result.eval = er.summary;
    add_phase("eval", Since(t0));
  }
  for (const char* name : {"calibrate", "rtn", "gptq", "gsq", "propagate", "write", "eval"}) {
    if (phases.count(name)) result.phases.push_back(phases[name]);
  }

  // report.json (beside the checkpoint; written atomically after it).
  nlohmann::json units_json = nlohmann::json::array();
  for (const UnitReport& r : reports) {
    nlohmann::json u = {{"name", r.name},          {"bits", r.bits},
                        {"grid", r.grid},          {"group_size", r.group_size},
                        {"method", r.method},      {"proxy_loss", r.proxy_loss},
                        {"tokens", r.tokens},      {"fallback_identity_hessian", r.fallback},
                        {"seconds", r.seconds}};
    if (r.gsq_loss_before >= 0) {
      u["gsq_loss_before"] = r.gsq_loss_before;
      u["gsq_loss_after"] = r.gsq_loss_after;
      u["gsq_changed_fraction"] = r.changed_fraction;
    }
    units_json.push_back(u);
  }
  nlohmann::json phases_json = nlohmann::json::array();
  for (const PhaseTiming& p : result.phases) {
    phases_json.push_back(
        {{"phase", p.phase}, {"seconds", p.seconds}, {"peak_rss_bytes", p.peak_rss_bytes}});
  }
  nlohmann::json report = {
      {"options", spec.ToJson()},
      {"units", units_json},
      {"fallback_experts", result.fallback_experts},
      {"phases", phases_json},
      {"bits_per_param",
       {{"quantized_true", stats.bits_per_quantized_param_true},
        {"quantized_stored", stats.bits_per_quantized_param_stored},
        {"checkpoint_true", stats.bits_per_param_true},
        {"checkpoint_stored", stats.bits_per_param_stored}}},
      {"container_note", stats.container_note},
  };
  if (result.evaluated) {
    auto iv = [](const eval::Interval& i) { return nlohmann::json{i.value, i.lo, i.hi}; };
    report["eval"] = {{"text", spec.eval_text},        {"windows", result.eval.windows},
                      {"ppl", iv(result.eval.ppl)},     {"kl", iv(result.eval.kl)},
                      {"ear", iv(result.eval.ear)},     {"ear_top10", iv(result.eval.ear_top10)},
                      {"flip_rate", iv(result.eval.flip_rate)},
                      {"next_token_acc", iv(result.eval.accuracy)}};
  }
  result.report_path = spec.out_dir + "/report.json";
  const std::string tmp = result.report_path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << report.dump(1) << "\n";
    if (!out) return absl::DataLossError(absl::StrCat(tmp, ": write failed"));
  }
  fs::rename(tmp, result.report_path);
  return result;
}

}  // namespace quant::tasks
