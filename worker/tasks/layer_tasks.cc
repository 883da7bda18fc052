#include "worker/tasks/layer_tasks.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/metrics.h"
#include "common/status.h"

namespace quant::tasks {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

bool ParseExpertGate(const std::string& linear, int* expert) {
  int e = -1;
  char tail[32] = {0};
  if (std::sscanf(linear.c_str(), "mlp.experts.%d.%31s", &e, tail) == 2 &&
      std::string(tail) == "gate_proj") {
    *expert = e;
    return true;
  }
  return false;
}

double ProxyLoss(const at::Tensor& w, const at::Tensor& wq, const at::Tensor& h) {
  at::Tensor dw = wq.to(w.device()) - w;
  at::Tensor hh = h.defined() ? h : at::eye(w.size(1), w.options().dtype(at::kFloat));
  return (at::matmul(dw, hh) * dw).sum().item<double>();
}

// A routed expert's projection (0 gate, 1 up, 2 down) from its local name, or -1.
int ExpertFamily(const std::string& local) {
  if (!local.starts_with("mlp.experts.")) return -1;
  const char* kProj[3] = {"gate_proj.weight", "up_proj.weight", "down_proj.weight"};
  for (int f = 0; f < 3; ++f) {
    if (local.ends_with(kProj[f])) return f;
  }
  return -1;
}

std::string ExpertPrefix(const std::string& name) {
  // "model.layers.1.mlp.experts.3.gate_proj.weight" -> "model.layers.1.mlp.experts.3"
  const size_t pos = name.rfind('.', name.size() - sizeof(".weight"));
  return name.substr(0, pos);
}

// Cancelled when the caller asks the task to stop (a revoked lease, Ctrl-C): asked before each
// of the `n` pieces of a loop, so a cancel waits for one piece, not the task.
absl::Status StopRequested(const JobState& job, const char* piece, int64_t i, int64_t n) {
  if (!job.hooks.should_stop || !job.hooks.should_stop()) return absl::OkStatus();
  return absl::CancelledError(absl::StrCat("stopped before ", piece, " ", i, " of ", n));
}

}  // namespace

void LayerCapture::OnLinearInput(int layer, const std::string& linear, const at::Tensor& x) {
  hessians_.OnLinearInput(layer, linear, x);
  if (!capture_tokens_) return;
  int expert = -1;
  if (ParseExpertGate(linear, &expert)) {
    inputs_[expert].push_back(x.to(at::kFloat).reshape({-1, x.size(-1)}).clone());
  }
}

void LayerCapture::OnExpertOutput(int layer, int expert, const at::Tensor& y) {
  if (capture_tokens_) outputs_[expert].push_back(y.to(at::kFloat).clone());
}

at::Tensor LayerCapture::Cat(const std::map<int, std::vector<at::Tensor>>& m, int e,
                             int64_t hidden) const {
  auto it = m.find(e);
  if (it == m.end() || it->second.empty()) {
    return at::zeros({0, hidden}, at::TensorOptions().dtype(at::kFloat).device(device_));
  }
  return at::cat(it->second, 0);
}

std::vector<int> LayerCapture::CapturedExperts() const {
  std::vector<int> experts;
  for (const auto& [e, chunks] : inputs_) experts.push_back(e);
  return experts;
}

absl::Status LoadLayerState(JobState& job, int layer) {
  LayerState& ls = job.layer;
  ls = LayerState();
  ls.index = layer;
  ls.prefix = absl::StrCat("model.layers.", layer, ".");
  ASSIGN_OR_RETURN(ls.weights, job.model->LoadLayer(layer, nullptr));
  for (const auto& [local, t] : ls.weights.tensors) {
    if (t.dim() == 2 && quant::InQuantScope(ls.prefix + local, job.scope)) {
      ls.names.push_back(local);
    }
  }
  return absl::OkStatus();
}

absl::Status RunCalibrateTask(JobState& job, int layer, bool capture_tokens) {
  const model::ModelConfig& config = job.model->config();
  RETURN_IF_ERROR(LoadLayerState(job, layer));
  LayerState& ls = job.layer;
  if (ls.names.empty() && job.gang.size <= 1) return absl::OkStatus();
  ls.capture = std::make_unique<LayerCapture>(
      capture_tokens && job.spec.method == Method::kGsq &&
          job.objective == quant::GsqObjective::kExpertOutput && config.IsMoeLayer(layer),
      job.model->device());
  return ForwardBatches(job, ls.weights, ls.capture.get(), /*replace=*/false);
}

absl::Status ForwardBatches(JobState& job, const model::LayerWeights& w,
                            model::ForwardObserver* obs, bool replace) {
  const GangStep& g = job.gang;
  if (g.size <= 1) {
    const int64_t n = static_cast<int64_t>(job.hidden.size());
    for (int64_t b = 0; b < n; ++b) {
      RETURN_IF_ERROR(StopRequested(job, "batch", b, n));
      at::Tensor out = job.model->LayerForward(w, job.hidden[b], obs);
      if (replace) job.hidden[b] = out;
    }
    return absl::OkStatus();
  }
  const int64_t steps = (g.batches + g.size - 1) / g.size;
  if (static_cast<int64_t>(job.hidden.size()) != (g.batches - g.rank + g.size - 1) / g.size) {
    return absl::InternalError(absl::StrCat("gang rank ", g.rank, " holds ", job.hidden.size(),
                                            " of the layer's ", g.batches, " batches"));
  }
  for (int64_t step = 0; step < steps; ++step) {
    // A member that stops leaves the others waiting in the exchange until its watchdog; a
    // stop is asked of every member of a cancelled gang, so they all end.
    RETURN_IF_ERROR(StopRequested(job, "batch step", step, steps));
    if (step * g.size + g.rank < g.batches) {
      at::Tensor out = job.model->LayerForward(w, job.hidden[step], obs);
      RETURN_IF_ERROR(g.status());
      if (replace) job.hidden[step] = out;
    } else {
      RETURN_IF_ERROR(g.idle(w, obs));
    }
  }
  return absl::OkStatus();
}

at::Tensor HessianOf(const LayerState& ls, const std::string& local, int64_t* tokens) {
  const std::string module = local.substr(0, local.size() - std::string(".weight").size());
  const auto& stats = ls.capture->hessians().stats();
  auto it = stats.find(ls.prefix + module);
  *tokens = it != stats.end() ? it->second.tokens : 0;
  return *tokens > 0 ? it->second.Hessian() : at::Tensor();
}

absl::StatusOr<std::vector<quant::QuantizedWeight>> QuantizeStart(
    const JobState& job, const std::vector<at::Tensor>& weights,
    const std::vector<at::Tensor>& hessians, const quant::QuantScheme& scheme) {
  if (job.spec.method == Method::kRtn) {
    quant::RtnQuantizer rtn;
    std::vector<quant::QuantizedWeight> qs;
    for (const at::Tensor& w : weights) {
      ASSIGN_OR_RETURN(quant::QuantizedWeight q, rtn.Quantize(w, scheme, quant::UnitContext{}));
      qs.push_back(std::move(q));
    }
    return qs;
  }
  quant::GptqOptions options;
  options.damp = job.spec.damp;
  options.act_order = job.spec.act_order;
  options.mse_scale_search = job.spec.mse_scale_search;
  ASSIGN_OR_RETURN(std::vector<quant::QuantizedWeight> qs,
                   quant::GptqQuantizer(options).QuantizeBatch(weights, hessians, scheme));
  // Quantized units live on the host (export reads them there; GSQ places its own copies).
  for (quant::QuantizedWeight& q : qs) {
    if (q.codes.is_cuda()) {
      q.codes = q.codes.cpu();
      q.scales = q.scales.cpu();
      q.zeros = q.zeros.cpu();
    }
  }
  return qs;
}

int BitsOf(const JobState& job, const std::string& name) {
  auto it = job.unit_bits.find(name);
  return it != job.unit_bits.end() ? it->second : job.scheme.bits;
}

absl::Status RunQuantizeTask(JobState& job) {
  LayerState& ls = job.layer;
  if (ls.capture == nullptr) return absl::FailedPreconditionError("quantize before calibrate");
  const QuantizeJobSpec& spec = job.spec;
  // Units of one batch share a shape: one projection of every routed expert, or one linear.
  std::map<std::string, std::vector<std::string>> batches;
  for (const std::string& local : ls.names) {
    std::string key = local;
    if (local.starts_with("mlp.experts.")) {
      key = "experts/" + local.substr(local.rfind('.', local.size() - 8) + 1);
    }
    batches[absl::StrCat(key, "@", BitsOf(job, ls.prefix + local))].push_back(local);
  }
  int64_t done = 0;
  for (const auto& [key, members] : batches) {
    RETURN_IF_ERROR(
        StopRequested(job, "unit batch", done++, static_cast<int64_t>(batches.size())));
    quant::QuantScheme scheme = job.scheme;
    scheme.bits = BitsOf(job, ls.prefix + members[0]);
    std::vector<at::Tensor> ws, hs;
    std::vector<UnitReport> batch_reports;
    for (const std::string& local : members) {
      UnitReport r;
      r.name = ls.prefix + local;
      r.bits = scheme.bits;
      r.grid = NameOf(spec.grid);
      r.method = NameOf(spec.method);
      const at::Tensor h = HessianOf(ls, local, &r.tokens);
      if (!h.defined()) {
        r.fallback = true;  // no calibration token reached it: H = I
        if (local.find("experts.") != std::string::npos && local.ends_with("gate_proj.weight")) {
          job.fallback_experts.push_back(ExpertPrefix(r.name));
          metrics::Default()
              .GetCounter("quant_fallback_experts_total",
                          "Experts quantized with H = I: no calibration token reached them.")
              .Inc();
        }
      }
      ls.hessian_of[local] = h;
      ws.push_back(ls.weights.at(local));
      hs.push_back(h);
      batch_reports.push_back(r);
    }
    const auto batch_start = Clock::now();
    auto batch = QuantizeStart(job, ws, hs, scheme);
    if (!batch.ok()) {
      return absl::Status(batch.status().code(),
                          absl::StrCat(ls.prefix, key, ": ", batch.status().message()));
    }
    std::vector<quant::QuantizedWeight> qs = std::move(*batch);
    const double per_unit = Since(batch_start) / static_cast<double>(members.size());
    for (size_t m = 0; m < members.size(); ++m) {
      batch_reports[m].group_size = qs[m].group_size;
      batch_reports[m].seconds = per_unit;
      job.units[batch_reports[m].name] = std::move(qs[m]);
      job.reports.push_back(batch_reports[m]);
    }
  }
  return absl::OkStatus();
}

absl::Status RunGsqTask(JobState& job, int shard, int shards) {
  LayerState& ls = job.layer;
  if (ls.capture == nullptr) return absl::FailedPreconditionError("GSQ before calibrate");
  if (shards < 1 || shard < 0 || shard >= shards) {
    return absl::InvalidArgumentError(absl::StrCat("GSQ shard ", shard, " of ", shards));
  }
  const QuantizeJobSpec& spec = job.spec;
  const model::ModelConfig& config = job.model->config();
  quant::GsqOptions gsq_options;
  gsq_options.steps = spec.steps;
  gsq_options.seed = spec.seed + static_cast<uint64_t>(ls.index) * 1000003u;
  gsq_options.threads = std::max(1, spec.threads);
  gsq_options.cuda = spec.device == Device::kCuda;
  gsq_options.batch_tokens = int64_t{spec.batch_windows} * spec.window_tokens;
  gsq_options.should_stop = job.hooks.should_stop;
  gsq_options.on_step = job.hooks.on_gsq_step;
  std::vector<std::vector<std::string>> jobs;  // each: the member names of one run
  std::vector<std::string> expert_families[3];
  for (const std::string& local : GsqShardNames(ls, shard, shards)) {
    const int f = ExpertFamily(local);
    if (f >= 0) {
      expert_families[f].push_back(local);
    } else {
      jobs.push_back({local});
    }
  }

  std::map<std::string, UnitReport*> report_of;
  for (UnitReport& r : job.reports) {
    if (r.name.starts_with(ls.prefix)) report_of[r.name] = &r;
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
        // RunGsq takes host tensors and places its state itself (options.cuda).
        const at::Tensor& h = ls.hessian_of.at(local);
        fam.init.push_back(job.units.at(ls.prefix + local));
        fam.original.push_back(ls.weights.at(local).cpu());
        fam.hessian.push_back(h.defined() ? h.cpu() : h);
      }
      families.push_back(std::move(fam));
    }
    quant::GsqOptions o = gsq_options;
    o.objective = obj;
    ASSIGN_OR_RETURN(quant::GsqResult g, quant::RunGsq(families, tokens, job.scheme, o));
    int64_t members = 0;
    for (const auto& f : fams) members += static_cast<int64_t>(f.size());
    for (size_t f = 0; f < fams.size(); ++f) {
      for (size_t m = 0; m < fams[f].size(); ++m) {
        const std::string name = ls.prefix + fams[f][m];
        job.units[name] = g.families[f][m];
        auto it = report_of.find(name);
        if (it == report_of.end()) continue;
        UnitReport& r = *it->second;
        const quant::GsqMemberReport& gr = g.reports[f][m];
        r.method = "gsq";
        r.gsq_loss_before = gr.loss_before;
        r.gsq_loss_after = gr.loss_after;
        r.changed_fraction = gr.changed_fraction;
        r.seconds += g.seconds / std::max<int64_t>(1, members);
        job.gsq_changed_sum += gr.changed_fraction;
        if (gr.loss_before > 0) job.gsq_ratio_sum += gr.loss_after / gr.loss_before;
        ++job.gsq_units;
      }
    }
    return absl::OkStatus();
  };
  if (!expert_families[0].empty()) {
    quant::GsqExpertTokens tokens;
    if (job.objective == quant::GsqObjective::kExpertOutput) {
      for (const std::string& local : expert_families[0]) {
        int e = -1;
        std::sscanf(local.c_str(), "mlp.experts.%d.", &e);
        tokens.inputs.push_back(ls.capture->Inputs(e, config.hidden_size).cpu());
        tokens.targets.push_back(ls.capture->Outputs(e, config.hidden_size).cpu());
      }
      tokens.layer_tokens = job.windows * spec.window_tokens;
      // Every calibration token goes to experts_per_token experts.
      tokens.layer_routed = tokens.layer_tokens * config.experts_per_token;
      tokens.layer_experts = config.num_experts;
    }
    // The shard's first expert in the layer (GsqShardNames: a contiguous range of each family).
    gsq_options.member_offset = static_cast<int64_t>(config.num_experts) * shard / shards;
    RETURN_IF_ERROR(run_gsq({expert_families[0], expert_families[1], expert_families[2]},
                            {"gate_proj", "up_proj", "down_proj"}, &tokens, job.objective));
  }
  for (const auto& one : jobs) {
    RETURN_IF_ERROR(run_gsq({one}, {one[0]}, nullptr, quant::GsqObjective::kLayerLocal));
  }
  return absl::OkStatus();
}

std::vector<std::string> GsqShardNames(const LayerState& ls, int shard, int shards) {
  std::vector<std::string> others, families[3];
  for (const std::string& local : ls.names) {
    const int f = ExpertFamily(local);
    if (f >= 0) {
      families[f].push_back(local);
    } else {
      others.push_back(local);
    }
  }
  std::vector<std::string> names = shard == 0 ? others : std::vector<std::string>{};
  for (const auto& family : families) {
    const int64_t n = static_cast<int64_t>(family.size());
    names.insert(names.end(), family.begin() + n * shard / shards,
                 family.begin() + n * (shard + 1) / shards);
  }
  return names;
}

absl::Status EnsureLayerLoaded(JobState& job, int layer) {
  LayerState& ls = job.layer;
  if (ls.index == layer) return absl::OkStatus();
  // A layer without in-scope linears: nothing was calibrated, so load it here.
  ls = LayerState();
  ls.index = layer;
  ASSIGN_OR_RETURN(ls.weights, job.model->LoadLayer(layer, nullptr));
  return absl::OkStatus();
}

absl::Status RunPropagateTask(JobState& job, int layer) {
  RETURN_IF_ERROR(EnsureLayerLoaded(job, layer));
  LayerState& ls = job.layer;
  for (UnitReport& r : job.reports) {
    if (!r.name.starts_with(ls.prefix) || ls.prefix.empty()) continue;
    const std::string local = r.name.substr(ls.prefix.size());
    r.proxy_loss = ProxyLoss(ls.weights.at(local), job.units.at(r.name).Dequantize(),
                             ls.hessian_of.at(local));
  }
  // The quantized layer makes the next layer's inputs (DESIGN.md section 4).
  if (job.spec.calib_inputs == CalibInputs::kQuantized) {
    for (const std::string& local : ls.names) {
      ls.weights.tensors[local] =
          job.units.at(ls.prefix + local).Dequantize().to(job.model->device());
    }
  }
  RETURN_IF_ERROR(ForwardBatches(job, ls.weights, nullptr, /*replace=*/true));
  ls = LayerState();
  return absl::OkStatus();
}

}  // namespace quant::tasks
