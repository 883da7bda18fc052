// The per-layer task code of a quantization job (DESIGN.md section 4): calibrate, quantize
// (RTN/GPTQ), GSQ and propagate, each a function of the job's state. The one TaskRunner
// (worker/runner/) calls them for `qctl quantize` and for quant-worker alike.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "worker/model/calibration.h"
#include "worker/model/model.h"
#include "worker/quant/gptq.h"
#include "worker/quant/gsq.h"
#include "worker/quant/quantizer.h"
#include "job/scope.h"
#include "worker/tasks/job_result.h"
#include "job/slq_files.h"

namespace quant::tasks {

// Collects Hessians, and (for GSQ's expert-output objective) each expert's routed inputs and
// full-precision outputs.
class LayerCapture : public model::ForwardObserver {
 public:
  // `device`: where the empty token sets of experts that saw no token are made.
  LayerCapture(bool capture_tokens, at::Device device)
      : capture_tokens_(capture_tokens), device_(device) {}
  void OnLinearInput(int layer, const std::string& linear, const at::Tensor& x) override;
  void OnExpertOutput(int layer, int expert, const at::Tensor& y) override;
  const model::HessianCollector& hessians() const { return hessians_; }
  at::Tensor Inputs(int expert, int64_t hidden) const { return Cat(inputs_, expert, hidden); }
  at::Tensor Outputs(int expert, int64_t hidden) const { return Cat(outputs_, expert, hidden); }
  // Experts whose routed inputs were captured (GSQ's expert-output objective).
  std::vector<int> CapturedExperts() const;
  // Puts back what another process captured (quant-worker's task handoff).
  void RestoreHessian(const std::string& key, model::HessianStats stats) {
    hessians_.Restore(key, std::move(stats));
  }
  void RestoreTokens(int expert, at::Tensor inputs, at::Tensor outputs) {
    inputs_[expert] = {std::move(inputs)};
    outputs_[expert] = {std::move(outputs)};
  }

 private:
  at::Tensor Cat(const std::map<int, std::vector<at::Tensor>>& m, int e, int64_t hidden) const;
  bool capture_tokens_;
  at::Device device_;
  model::HessianCollector hessians_;
  std::map<int, std::vector<at::Tensor>> inputs_, outputs_;
};

struct UnitReport {
  std::string name;
  int bits = 0;
  std::string grid;
  int group_size = 0;
  std::string method;
  double proxy_loss = 0;        // tr(dW H dW^T) of the final weight (H of the calibration)
  double gsq_loss_before = -1;  // GSQ objective with GPTQ's codes (-1: no GSQ)
  double gsq_loss_after = -1;
  double changed_fraction = 0;
  int64_t tokens = 0;
  bool fallback = false;
  double seconds = 0;
};

// The layer a job is working on: its weights, in-scope linears and calibration.
struct LayerState {
  int index = -1;
  std::string prefix;                // "model.layers.3."
  model::LayerWeights weights;
  std::vector<std::string> names;    // in-scope linears, local names ("mlp.experts.0.up_proj.weight")
  std::unique_ptr<LayerCapture> capture;
  std::map<std::string, at::Tensor> hessian_of;  // local name -> H (undefined: identity)
};

// A gang member's share of a layer's forward (expert parallelism): JobState::hidden holds only
// the member's batches (round-robin: batch b belongs to rank b % size), and in steps where the
// member has no batch it still serves its experts to the others (idle).
struct GangStep {
  int rank = 0;
  int size = 1;
  int64_t batches = 0;  // the layer's batches over the whole gang
  std::function<absl::Status(const model::LayerWeights&, model::ForwardObserver*)> idle;
  std::function<absl::Status()> status;  // the exchange's first failure
};

// Everything the tasks of one job share in-process.
// What a running task tells its caller and asks it, at its step boundaries.
struct TaskHooks {
  // True once the task should stop (a revoked lease, Ctrl-C); long loops (GSQ's steps) ask it.
  std::function<bool()> should_stop;
  // GSQ's progress: (step done, steps, loss), about once a second and after the last step.
  std::function<void(int64_t step, int64_t steps, double loss)> on_gsq_step;
  // The evaluation's progress: (phase, done, total), as eval::RunEvalJob reports it.
  std::function<void(const std::string& phase, int64_t done, int64_t total)> on_eval_progress;
};

struct JobState {
  QuantizeJobSpec spec;
  TaskHooks hooks;  // unset members: never stop, no reports
  quant::QuantScheme scheme;
  quant::Scope scope = quant::Scope::kExperts;
  quant::GsqObjective objective = quant::GsqObjective::kExpertOutput;
  std::unique_ptr<model::Model> model;
  int64_t windows = 0;                // calibration windows
  std::vector<at::Tensor> hidden;     // the current layer's inputs, one tensor per batch
  GangStep gang;                      // size 1: this process forwards every batch
  LayerState layer;
  std::map<std::string, quant::QuantizedWeight> units;  // full tensor name -> result
  std::vector<UnitReport> reports;
  std::vector<std::string> fallback_experts;
  double gsq_changed_sum = 0, gsq_ratio_sum = 0;
  int64_t gsq_units = 0;
  // SLQ (empty otherwise).
  std::map<std::string, int> unit_bits;     // full tensor name -> bits chosen by the solve
  ProbeTable probes;                        // SLQ unit key -> bits -> score
  std::map<std::string, int64_t> unit_params;          // SLQ unit key -> weights
  std::map<std::string, std::vector<std::string>> unit_members;  // key -> full tensor names
  // --per-expert-bits: the tied expert units (one per layer and projection), probed only to
  // calibrate how their experts add up in the solve (slq_expert_model.h); never solved.
  std::vector<std::string> calibration_units;
  at::Tensor probe_windows;                 // int64 [N, T]: the probes' calibration windows
  std::vector<at::Tensor> probe_hidden;     // their inputs to the current layer (original model)
  at::Tensor probe_reference;               // the original model's final-normed hidden [N, T, H]
  std::vector<at::Tensor> first_hidden;     // the calibration windows' embeddings (pass 2 start)
  std::string probe_cache_file;             // "" : no cache
  int64_t probes_run = 0, probes_cached = 0;
  bool probes_complete = false;             // the cache held every probe: the pass is skipped
  double solve_seconds = 0;
  nlohmann::json solve_report;
};

// Loads layer `layer` and runs the original layer over the inputs, recording H per linear (and
// the experts' routed tokens and targets for GSQ).
// capture_tokens = false skips GSQ's token capture (SLQ's probe pass needs Hessians only).
absl::Status RunCalibrateTask(JobState& job, int layer, bool capture_tokens = true);
// Makes job.layer hold layer `layer`'s weights and in-scope names, with no calibration yet.
absl::Status LoadLayerState(JobState& job, int layer);
// The local names of the linears GSQ shard `shard` of `shards` refines: a contiguous range of
// each expert projection's (name-ordered) members; shard 0 also the layer's other linears.
std::vector<std::string> GsqShardNames(const LayerState& ls, int shard, int shards);
// RTN or GPTQ of every in-scope linear of the layer, batched per projection.
absl::Status RunQuantizeTask(JobState& job);
// GSQ of the layer: routed experts [shard/shards of them] jointly, other linears layer-local.
absl::Status RunGsqTask(JobState& job, int shard, int shards);
// The calibrated H of a local linear of the current layer (undefined: no token reached it), and
// the tokens it saw.
at::Tensor HessianOf(const LayerState& ls, const std::string& local, int64_t* tokens);
// The job's quantizer start for same-shaped linears: RTN, or GPTQ with each one's H.
absl::StatusOr<std::vector<quant::QuantizedWeight>> QuantizeStart(
    const JobState& job, const std::vector<at::Tensor>& weights,
    const std::vector<at::Tensor>& hessians, const quant::QuantScheme& scheme);
// Makes job.layer hold layer `layer`'s weights (loads it unless calibrate already did).
absl::Status EnsureLayerLoaded(JobState& job, int layer);
// The bits of a tensor (full name): the SLQ solve's, or the job's.
int BitsOf(const JobState& job, const std::string& name);
// Proxy losses, then the quantized layer (or the original, with calib_inputs "original") maps
// the inputs to the next layer's.
absl::Status RunPropagateTask(JobState& job, int layer);
// The layer over job.hidden (in place when `replace`), lock-step with the gang when there is one.
absl::Status ForwardBatches(JobState& job, const model::LayerWeights& w,
                            model::ForwardObserver* obs, bool replace);

}  // namespace quant::tasks
