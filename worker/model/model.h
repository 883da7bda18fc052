// Layer-by-layer forward passes of DeepSeek-V3/Kimi-K2 (MLA, YaRN, grouped sigmoid routing,
// shared experts) and Qwen3-MoE (GQA, q/k norm, softmax routing) in libtorch. One layer's
// weights are resident at a time; observers see every linear's input for calibration.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "storage/checkpoint.h"
#include "job/model_config.h"

namespace quant::model {

enum class ComputeDType { kF32, kBF16 };
absl::StatusOr<ComputeDType> ParseComputeDType(std::string_view name);

// Sees the inputs of linears during a forward pass (calibration, DESIGN.md section 4 phase 1).
// `linear` is the weight name inside the layer without ".weight", e.g. "self_attn.q_a_proj",
// "mlp.experts.7.down_proj", "mlp.shared_experts.up_proj". `x` is [..., in_features] in the
// compute dtype; for routed experts only the tokens routed to that expert (possibly 0 rows).
class ForwardObserver {
 public:
  virtual ~ForwardObserver() = default;
  virtual void OnLinearInput(int layer, const std::string& linear, const at::Tensor& x) = 0;
  // Routed expert output (before the router weight), on its routed tokens: GSQ's targets.
  virtual void OnExpertOutput(int layer, int expert, const at::Tensor& y) {}
};

// Rewrites a weight as it is loaded (fake quantization): full tensor name, float32 weight in;
// the replacement (same shape, float32) out.
using WeightTransform =
    std::function<absl::StatusOr<at::Tensor>(const std::string& name, const at::Tensor& weight)>;

// One decoder layer's weights in the compute dtype, keyed by name without "model.layers.{i}.".
struct LayerWeights {
  int layer = -1;
  std::map<std::string, at::Tensor> tensors;
  const at::Tensor& at(const std::string& name) const;
  int64_t bytes() const;
};

class Model;

// Runs the routed experts of an MoE layer for one batch (expert parallelism: the experts live in
// other processes). Returns sum over each token's chosen experts of weight x expert(x), [n, H],
// exactly as the in-process loop does (same expert order, same operations).
class ExpertRunner {
 public:
  virtual ~ExpertRunner() = default;
  // x [n, H]; topk_indices, topk_weights [n, k]; `order` the (token, slot) pairs sorted by
  // expert and `counts` (CPU int64 [E]) the pairs per expert, as Model::Moe computed them.
  virtual at::Tensor Run(const Model& model, const LayerWeights& w, const at::Tensor& x,
                         const at::Tensor& topk_weights, const at::Tensor& order,
                         const at::Tensor& counts, ForwardObserver* obs) = 0;
};

class Model {
 public:
  // Opens the checkpoint and parses its config; reads no weights yet.
  static absl::StatusOr<std::unique_ptr<Model>> Open(const std::string& dir, ComputeDType dtype);
  static absl::StatusOr<std::unique_ptr<Model>> FromCheckpoint(
      std::shared_ptr<const storage::Checkpoint> checkpoint, ComputeDType dtype);

  const ModelConfig& config() const { return config_; }
  const storage::Checkpoint& checkpoint() const { return *checkpoint_; }
  ComputeDType compute_dtype() const { return dtype_; }
  at::ScalarType scalar_type() const;

  // Where weights and activations live: every tensor the model returns (embeddings, layer
  // weights, the head, hidden states) is on this device; reads go through the host. CPU by
  // default; CUDA with a CUDA libtorch (`qctl quantize --device cuda`).
  void SetDevice(at::Device device) { device_ = device; }
  at::Device device() const { return device_; }

  // Reads a tensor by full name as float32 (dequantizing fp8).
  absl::StatusOr<at::Tensor> ReadF32(const std::string& name) const;

  // ids int64 [B, T] -> hidden [B, T, hidden] in the compute dtype.
  absl::StatusOr<at::Tensor> Embed(const at::Tensor& ids) const;

  // Loads layer `layer`, applying `transform` (may be null) to every 2-D linear weight.
  absl::StatusOr<LayerWeights> LoadLayer(int layer, const WeightTransform* transform) const;

  // hidden [B, T, H] -> [B, T, H]; positions are 0..T-1 in every row.
  at::Tensor LayerForward(const LayerWeights& w, const at::Tensor& hidden,
                          ForwardObserver* observer) const;

  // Expert parallelism: LoadLayer reads only routed experts [first, last), and MoE layers send
  // their routed tokens through `runner` (not owned; null: every expert runs here).
  void SetExpertParallel(int first, int last, ExpertRunner* runner) {
    expert_first_ = first;
    expert_last_ = last;
    runner_ = runner;
  }
  bool ExpertResident(int expert) const {
    return expert_last_ < 0 || (expert >= expert_first_ && expert < expert_last_);
  }
  // One routed expert's MLP on its tokens (observed as the in-process loop observes it).
  at::Tensor ExpertMlp(const LayerWeights& w, int expert, const at::Tensor& x,
                       ForwardObserver* obs) const;

  // Final RMSNorm and lm_head.
  struct Head {
    at::Tensor norm;     // [H]
    at::Tensor lm_head;  // [V, H]
  };
  absl::StatusOr<Head> LoadHead() const;
  at::Tensor FinalNorm(const Head& head, const at::Tensor& hidden) const;
  // hidden (already normed) [N, H] -> float32 logits [N, V].
  at::Tensor Logits(const Head& head, const at::Tensor& normed) const;

  // Convenience: the whole forward (layer by layer), float32 logits [B, T, V]. When
  // `hidden_states` is given it receives num_layers + 1 tensors as transformers returns them.
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& ids, const WeightTransform* transform,
                                     std::vector<at::Tensor>* hidden_states) const;

 private:
  Model() = default;
  at::Tensor Attention(const LayerWeights& w, const at::Tensor& x, ForwardObserver* obs) const;
  at::Tensor DeepseekAttention(const LayerWeights& w, const at::Tensor& x,
                               ForwardObserver* obs) const;
  at::Tensor QwenAttention(const LayerWeights& w, const at::Tensor& x, ForwardObserver* obs) const;
  at::Tensor Mlp(const LayerWeights& w, const std::string& prefix, const at::Tensor& x,
                 ForwardObserver* obs) const;
  at::Tensor Moe(const LayerWeights& w, const at::Tensor& x, ForwardObserver* obs) const;
  // [T, rope_dim] cos and sin in float32 (attention factor applied), cached per length.
  std::pair<at::Tensor, at::Tensor> RopeTables(int64_t length) const;

  std::shared_ptr<const storage::Checkpoint> checkpoint_;
  ModelConfig config_;
  ComputeDType dtype_ = ComputeDType::kF32;
  at::Device device_ = at::Device(at::kCPU);
  mutable std::map<int64_t, std::pair<at::Tensor, at::Tensor>> rope_cache_;
  int expert_first_ = 0, expert_last_ = -1;  // -1: all experts resident
  ExpertRunner* runner_ = nullptr;
};

// Inverse frequencies and attention factor of the rotary embedding (default or YaRN), as
// transformers computes them. Exposed for tests.
at::Tensor RopeInvFreq(const RopeConfig& rope, double* attention_factor);

// Wraps host bytes as a CPU tensor of the matching dtype, without copying.
at::Tensor HostToTensor(storage::HostTensor host);

// RMSNorm as transformers does it: float32 statistics, result cast back, then times weight.
at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps);

}  // namespace quant::model
