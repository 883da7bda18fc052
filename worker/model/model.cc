// Forward passes for DeepSeek-V3/Kimi-K2 and Qwen3-MoE, written to match transformers 5.17's
// eager implementation operation by operation (the shared reference outputs come from it).
#include "worker/model/model.h"

#include <cmath>
#include <numbers>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "job/config_check.h"

namespace quant::model {
namespace {

// bf16 products accumulate in float32 and round once, as tensor-core GEMMs do; the CPU's own
// bf16 GEMM in libtorch 1.13 is a slow reference loop (measured ~40x slower than this).
at::Tensor MatMul(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() == at::kBFloat16) {
    return at::matmul(a.to(at::kFloat), b.to(at::kFloat)).to(at::kBFloat16);
  }
  return at::matmul(a, b);
}

at::Tensor Linear(const at::Tensor& x, const at::Tensor& w) { return MatMul(x, w.t()); }

// transformers' rotate_half: (-x2, x1) over the two halves of the last dim.
at::Tensor RotateHalf(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// Causal scaled-dot-product attention as transformers' eager path: float32 softmax, cast back.
// q [B, H, T, D], k [B, H, T, D], v [B, H, T, Dv] -> [B, T, H, Dv].
at::Tensor CausalAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           double scale) {
  const int64_t t = q.size(2);
  at::Tensor scores = MatMul(q, k.transpose(2, 3)) * scale;
  at::Tensor mask =
      at::ones({t, t}, at::TensorOptions().dtype(at::kBool).device(q.device())).triu(1);
  scores = scores.masked_fill(mask, -std::numeric_limits<float>::infinity());
  at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  return MatMul(probs, v).transpose(1, 2).contiguous();
}

double YarnGetMscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

// Every 2-D ".weight" of a layer is a linear (norms are 1-D); the transform decides which of
// them it quantizes (kv_a_proj_with_mqa does not end in "_proj.weight").
bool IsLinearWeight(const std::string& name, const at::Tensor& t) {
  return t.dim() == 2 && name.ends_with(".weight");
}

}  // namespace

at::Tensor HostToTensor(storage::HostTensor host) {
  at::ScalarType type;
  switch (host.dtype) {
    case storage::DType::kF32: type = at::kFloat; break;
    case storage::DType::kF64: type = at::kDouble; break;
    case storage::DType::kBF16: type = at::kBFloat16; break;
    case storage::DType::kF16: type = at::kHalf; break;
    case storage::DType::kI64: type = at::kLong; break;
    case storage::DType::kI32: type = at::kInt; break;
    case storage::DType::kI16: type = at::kShort; break;
    case storage::DType::kI8: type = at::kChar; break;
    case storage::DType::kU8: type = at::kByte; break;
    case storage::DType::kBool: type = at::kBool; break;
    case storage::DType::kF8E4M3: type = at::kByte; break;  // raw bytes; decode via ReadF32
  }
  // The tensor keeps the bytes alive without copying them.
  auto owner = std::make_shared<storage::HostTensor>(std::move(host));
  std::vector<int64_t> sizes = owner->shape;
  void* data = owner->bytes.data();
  return at::from_blob(
      data, sizes, [owner](void*) mutable { owner.reset(); }, at::TensorOptions().dtype(type));
}

absl::StatusOr<ComputeDType> ParseComputeDType(std::string_view name) {
  if (name == "fp32" || name == "float32") return ComputeDType::kF32;
  if (name == "bf16" || name == "bfloat16") return ComputeDType::kBF16;
  return absl::InvalidArgumentError(
      absl::StrCat("--compute: '", std::string(name), "' is not one of fp32, bf16"));
}

const at::Tensor& LayerWeights::at(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) {
    std::fprintf(stderr, "layer %d has no weight %s\n", layer, name.c_str());
    QUANT_CHECK(false);
  }
  return it->second;
}

int64_t LayerWeights::bytes() const {
  int64_t total = 0;
  for (const auto& [name, t] : tensors) total += t.numel() * t.element_size();
  return total;
}

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor h = x.to(at::kFloat);
  at::Tensor variance = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * at::rsqrt(variance + eps);
  return weight * h.to(x.scalar_type());
}

at::Tensor RopeInvFreq(const RopeConfig& rope, double* attention_factor) {
  const int dim = rope.dim;
  at::Tensor exponents = at::arange(0, dim, 2, at::TensorOptions().dtype(at::kLong)).to(at::kFloat) /
                         static_cast<float>(dim);
  at::Tensor pos_freqs = at::pow(rope.theta, exponents);
  at::Tensor inv_freq = 1.0 / pos_freqs;
  *attention_factor = 1.0;
  if (!rope.yarn) return inv_freq;

  // transformers' _compute_yarn_parameters.
  const double factor = rope.factor;
  if (rope.attention_factor != 0.0) {
    *attention_factor = rope.attention_factor;
  } else if (rope.mscale != 0.0 && rope.mscale_all_dim != 0.0) {
    *attention_factor =
        YarnGetMscale(factor, rope.mscale) / YarnGetMscale(factor, rope.mscale_all_dim);
  } else {
    *attention_factor = YarnGetMscale(factor, 1.0);
  }
  auto correction_dim = [&](double rotations) {
    return (dim * std::log(rope.original_max_position / (rotations * 2 * std::numbers::pi))) /
           (2 * std::log(rope.theta));
  };
  double low = correction_dim(rope.beta_fast);
  double high = correction_dim(rope.beta_slow);
  if (rope.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  if (low == high) high += 0.001;  // avoids a division by zero, as transformers does
  at::Tensor ramp = ((at::arange(dim / 2, at::TensorOptions().dtype(at::kFloat)) - low) /
                     (high - low))
                        .clamp(0, 1);
  at::Tensor extrapolation_factor = 1 - ramp;
  at::Tensor inv_freq_extrapolation = 1.0 / pos_freqs;
  at::Tensor inv_freq_interpolation = 1.0 / (factor * pos_freqs);
  return inv_freq_interpolation * (1 - extrapolation_factor) +
         inv_freq_extrapolation * extrapolation_factor;
}

absl::StatusOr<std::unique_ptr<Model>> Model::Open(const std::string& dir, ComputeDType dtype) {
  ASSIGN_OR_RETURN(std::unique_ptr<storage::Checkpoint> ckpt, storage::Checkpoint::Open(dir));
  return FromCheckpoint(std::shared_ptr<const storage::Checkpoint>(std::move(ckpt)), dtype);
}

absl::StatusOr<std::unique_ptr<Model>> Model::FromCheckpoint(
    std::shared_ptr<const storage::Checkpoint> checkpoint, ComputeDType dtype) {
  // The config is checked against the index here, not layer by layer inside a task.
  ASSIGN_OR_RETURN(ModelConfig config, ReadModelConfig(*checkpoint));
  std::unique_ptr<Model> m(new Model());
  m->checkpoint_ = std::move(checkpoint);
  m->config_ = std::move(config);
  m->dtype_ = dtype;
  // Every tensor a forward pass needs must be present before any work starts.
  std::vector<std::string> required = {"model.embed_tokens.weight", "model.norm.weight",
                                       "lm_head.weight"};
  for (const std::string& name : required) {
    if (!m->checkpoint_->Has(name)) {
      return absl::NotFoundError(
          absl::StrCat(m->checkpoint_->dir(), ": checkpoint has no tensor ", name));
    }
  }
  return m;
}

at::ScalarType Model::scalar_type() const {
  return dtype_ == ComputeDType::kF32 ? at::kFloat : at::kBFloat16;
}

absl::StatusOr<at::Tensor> Model::ReadF32(const std::string& name) const {
  ASSIGN_OR_RETURN(storage::HostTensor host, checkpoint_->ReadF32(name));
  return HostToTensor(std::move(host));
}

absl::StatusOr<at::Tensor> Model::Embed(const at::Tensor& ids) const {
  ASSIGN_OR_RETURN(at::Tensor table, ReadF32("model.embed_tokens.weight"));
  if (table.dim() != 2 || table.size(0) != config_.vocab_size ||
      table.size(1) != config_.hidden_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        checkpoint_->dir(), ": model.embed_tokens.weight has shape [", table.size(0), ", ",
        table.dim() > 1 ? table.size(1) : 0, "], config says [", config_.vocab_size, ", ",
        config_.hidden_size, "]"));
  }
  if (ids.numel() > 0 && (ids.min().item<int64_t>() < 0 ||
                          ids.max().item<int64_t>() >= config_.vocab_size)) {
    return absl::InvalidArgumentError("token id outside the vocabulary");
  }
  return at::embedding(table.to(device_, scalar_type()), ids.to(device_));
}

absl::StatusOr<LayerWeights> Model::LoadLayer(int layer, const WeightTransform* transform) const {
  if (layer < 0 || layer >= config_.num_layers) {
    return absl::OutOfRangeError(absl::StrCat("layer ", layer, " out of range"));
  }
  const std::string prefix = absl::StrCat("model.layers.", layer, ".");
  LayerWeights w;
  w.layer = layer;
  for (const std::string& name : checkpoint_->Names()) {
    if (!name.starts_with(prefix) || name.ends_with("_scale_inv")) continue;
    int expert = -1;
    if (std::sscanf(name.c_str() + prefix.size(), "mlp.experts.%d.", &expert) == 1 &&
        !ExpertResident(expert)) {
      continue;  // another process of the gang holds it
    }
    ASSIGN_OR_RETURN(at::Tensor t, ReadF32(name));
    if (transform != nullptr && IsLinearWeight(name, t)) {
      ASSIGN_OR_RETURN(t, (*transform)(name, t));
    }
    // The router and its correction bias stay float32: DeepSeek routes in float32.
    const std::string local = name.substr(prefix.size());
    const bool keep_f32 = local == "mlp.e_score_correction_bias" ||
                          local == "mlp.gate.e_score_correction_bias";
    w.tensors[local] = keep_f32 ? t.to(device_) : t.to(device_, scalar_type());
  }
  // Check the weights this architecture needs, with shapes, before running anything.
  auto need = [&](const std::string& local, std::vector<int64_t> shape) -> absl::Status {
    auto it = w.tensors.find(local);
    if (it == w.tensors.end()) {
      return absl::NotFoundError(
          absl::StrCat(checkpoint_->dir(), ": checkpoint has no tensor ", prefix, local));
    }
    if (it->second.sizes().vec() != shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          checkpoint_->dir(), ": tensor ", prefix, local, " has shape ",
          absl::StrJoin(it->second.sizes().vec(), "x"), ", config.json implies ",
          absl::StrJoin(shape, "x")));
    }
    return absl::OkStatus();
  };
  const ModelConfig& c = config_;
  const int64_t h = c.hidden_size;
  RETURN_IF_ERROR(need("input_layernorm.weight", {h}));
  RETURN_IF_ERROR(need("post_attention_layernorm.weight", {h}));
  if (c.arch == Arch::kDeepseekV3) {
    if (c.q_lora_rank > 0) {
      RETURN_IF_ERROR(need("self_attn.q_a_proj.weight", {c.q_lora_rank, h}));
      RETURN_IF_ERROR(need("self_attn.q_a_layernorm.weight", {c.q_lora_rank}));
      RETURN_IF_ERROR(
          need("self_attn.q_b_proj.weight", {int64_t{c.num_heads} * c.QkHeadDim(), c.q_lora_rank}));
    } else {
      RETURN_IF_ERROR(need("self_attn.q_proj.weight", {int64_t{c.num_heads} * c.QkHeadDim(), h}));
    }
    RETURN_IF_ERROR(
        need("self_attn.kv_a_proj_with_mqa.weight", {c.kv_lora_rank + c.qk_rope_head_dim, h}));
    RETURN_IF_ERROR(need("self_attn.kv_a_layernorm.weight", {c.kv_lora_rank}));
    RETURN_IF_ERROR(need("self_attn.kv_b_proj.weight",
                         {int64_t{c.num_heads} * (c.qk_nope_head_dim + c.v_head_dim),
                          c.kv_lora_rank}));
    RETURN_IF_ERROR(need("self_attn.o_proj.weight", {h, int64_t{c.num_heads} * c.v_head_dim}));
  } else {
    const int64_t d = c.head_dim;
    RETURN_IF_ERROR(need("self_attn.q_proj.weight", {c.num_heads * d, h}));
    RETURN_IF_ERROR(need("self_attn.k_proj.weight", {c.num_kv_heads * d, h}));
    RETURN_IF_ERROR(need("self_attn.v_proj.weight", {c.num_kv_heads * d, h}));
    RETURN_IF_ERROR(need("self_attn.o_proj.weight", {h, c.num_heads * d}));
    RETURN_IF_ERROR(need("self_attn.q_norm.weight", {d}));
    RETURN_IF_ERROR(need("self_attn.k_norm.weight", {d}));
  }
  auto need_mlp = [&](const std::string& p, int64_t inter) -> absl::Status {
    RETURN_IF_ERROR(need(p + "gate_proj.weight", {inter, h}));
    RETURN_IF_ERROR(need(p + "up_proj.weight", {inter, h}));
    return need(p + "down_proj.weight", {h, inter});
  };
  if (c.IsMoeLayer(layer)) {
    RETURN_IF_ERROR(need("mlp.gate.weight", {c.num_experts, h}));
    if (c.arch == Arch::kDeepseekV3 && c.sigmoid_scores) {
      RETURN_IF_ERROR(need("mlp.gate.e_score_correction_bias", {c.num_experts}));
    }
    for (int e = 0; e < c.num_experts; ++e) {
      if (!ExpertResident(e)) continue;
      RETURN_IF_ERROR(need_mlp(absl::StrCat("mlp.experts.", e, "."), c.moe_intermediate_size));
    }
    if (c.n_shared_experts > 0) {
      RETURN_IF_ERROR(
          need_mlp("mlp.shared_experts.", int64_t{c.moe_intermediate_size} * c.n_shared_experts));
    }
  } else {
    RETURN_IF_ERROR(need_mlp("mlp.", c.intermediate_size));
  }
  return w;
}

std::pair<at::Tensor, at::Tensor> Model::RopeTables(int64_t length) const {
  auto it = rope_cache_.find(length);
  if (it != rope_cache_.end()) return it->second;
  double attention_factor = 1.0;
  at::Tensor inv_freq = RopeInvFreq(config_.rope, &attention_factor);
  at::Tensor positions = at::arange(length, at::TensorOptions().dtype(at::kFloat));
  at::Tensor freqs = at::outer(positions, inv_freq);
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  auto tables = std::make_pair((emb.cos() * attention_factor).to(device_),
                               (emb.sin() * attention_factor).to(device_));
  rope_cache_[length] = tables;
  return tables;
}

at::Tensor Model::Attention(const LayerWeights& w, const at::Tensor& x,
                            ForwardObserver* obs) const {
  return config_.arch == Arch::kDeepseekV3 ? DeepseekAttention(w, x, obs)
                                           : QwenAttention(w, x, obs);
}

namespace {
void Observe(ForwardObserver* obs, int layer, const char* linear, const at::Tensor& x) {
  if (obs != nullptr) obs->OnLinearInput(layer, linear, x);
}
}  // namespace

at::Tensor Model::QwenAttention(const LayerWeights& w, const at::Tensor& x,
                                ForwardObserver* obs) const {
  const ModelConfig& c = config_;
  const int64_t b = x.size(0), t = x.size(1), d = c.head_dim;
  Observe(obs, w.layer, "self_attn.q_proj", x);
  Observe(obs, w.layer, "self_attn.k_proj", x);
  Observe(obs, w.layer, "self_attn.v_proj", x);
  at::Tensor q = RmsNorm(Linear(x, w.at("self_attn.q_proj.weight")).view({b, t, -1, d}),
                         w.at("self_attn.q_norm.weight"), c.rms_norm_eps)
                     .transpose(1, 2);
  at::Tensor k = RmsNorm(Linear(x, w.at("self_attn.k_proj.weight")).view({b, t, -1, d}),
                         w.at("self_attn.k_norm.weight"), c.rms_norm_eps)
                     .transpose(1, 2);
  at::Tensor v = Linear(x, w.at("self_attn.v_proj.weight")).view({b, t, -1, d}).transpose(1, 2);
  auto [cos, sin] = RopeTables(t);
  cos = cos.to(x.scalar_type());
  sin = sin.to(x.scalar_type());
  q = q * cos + RotateHalf(q) * sin;
  k = k * cos + RotateHalf(k) * sin;
  const int64_t groups = c.num_heads / c.num_kv_heads;
  if (groups > 1) {  // repeat_kv
    k = k.repeat_interleave(groups, 1);
    v = v.repeat_interleave(groups, 1);
  }
  at::Tensor out = CausalAttention(q, k, v, c.AttentionScale()).reshape({b, t, -1});
  Observe(obs, w.layer, "self_attn.o_proj", out);
  return Linear(out, w.at("self_attn.o_proj.weight"));
}

at::Tensor Model::DeepseekAttention(const LayerWeights& w, const at::Tensor& x,
                                    ForwardObserver* obs) const {
  const ModelConfig& c = config_;
  const int64_t b = x.size(0), t = x.size(1);
  const int64_t nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, vd = c.v_head_dim;
  at::Tensor q;
  if (c.q_lora_rank > 0) {
    Observe(obs, w.layer, "self_attn.q_a_proj", x);
    at::Tensor qa = RmsNorm(Linear(x, w.at("self_attn.q_a_proj.weight")),
                            w.at("self_attn.q_a_layernorm.weight"), c.rms_norm_eps);
    Observe(obs, w.layer, "self_attn.q_b_proj", qa);
    q = Linear(qa, w.at("self_attn.q_b_proj.weight"));
  } else {
    Observe(obs, w.layer, "self_attn.q_proj", x);
    q = Linear(x, w.at("self_attn.q_proj.weight"));
  }
  q = q.view({b, t, -1, nope + rope}).transpose(1, 2);
  at::Tensor q_pass = q.narrow(-1, 0, nope);
  at::Tensor q_rot = q.narrow(-1, nope, rope);

  Observe(obs, w.layer, "self_attn.kv_a_proj_with_mqa", x);
  at::Tensor ckv = Linear(x, w.at("self_attn.kv_a_proj_with_mqa.weight"));
  at::Tensor k_pass = ckv.narrow(-1, 0, c.kv_lora_rank);
  at::Tensor k_rot = ckv.narrow(-1, c.kv_lora_rank, rope);
  k_pass = RmsNorm(k_pass, w.at("self_attn.kv_a_layernorm.weight"), c.rms_norm_eps);
  Observe(obs, w.layer, "self_attn.kv_b_proj", k_pass);
  at::Tensor kv = Linear(k_pass, w.at("self_attn.kv_b_proj.weight"))
                      .view({b, t, -1, nope + vd})
                      .transpose(1, 2);
  k_pass = kv.narrow(-1, 0, nope);
  at::Tensor v = kv.narrow(-1, nope, vd);
  k_rot = k_rot.reshape({b, 1, t, rope});

  auto [cos, sin] = RopeTables(t);
  cos = cos.to(x.scalar_type());
  sin = sin.to(x.scalar_type());
  auto apply = [&](at::Tensor r) {
    if (c.rope.interleave) {
      // Pairs (2i, 2i+1) regrouped into halves, as apply_rotary_pos_emb_interleave does.
      auto s = r.sizes().vec();
      std::vector<int64_t> split = {s[0], s[1], s[2], s[3] / 2, 2};
      r = r.reshape(split).transpose(4, 3).reshape(s);
    }
    return r * cos + RotateHalf(r) * sin;
  };
  q_rot = apply(q_rot);
  k_rot = apply(k_rot).expand({b, c.num_heads, t, rope});
  at::Tensor query = at::cat({q_pass, q_rot}, -1);
  at::Tensor key = at::cat({k_pass, k_rot}, -1);
  at::Tensor out = CausalAttention(query, key, v, c.AttentionScale()).reshape({b, t, -1});
  Observe(obs, w.layer, "self_attn.o_proj", out);
  return Linear(out, w.at("self_attn.o_proj.weight"));
}

at::Tensor Model::Mlp(const LayerWeights& w, const std::string& prefix, const at::Tensor& x,
                      ForwardObserver* obs) const {
  if (obs != nullptr) {
    obs->OnLinearInput(w.layer, prefix + "gate_proj", x);
    obs->OnLinearInput(w.layer, prefix + "up_proj", x);
  }
  at::Tensor act = at::silu(Linear(x, w.at(prefix + "gate_proj.weight"))) *
                   Linear(x, w.at(prefix + "up_proj.weight"));
  if (obs != nullptr) obs->OnLinearInput(w.layer, prefix + "down_proj", act);
  return Linear(act, w.at(prefix + "down_proj.weight"));
}

at::Tensor Model::Moe(const LayerWeights& w, const at::Tensor& x3, ForwardObserver* obs) const {
  const ModelConfig& c = config_;
  at::Tensor x = x3.reshape({-1, x3.size(-1)});
  const int64_t n = x.size(0);
  at::Tensor topk_indices, topk_weights;
  if (c.sigmoid_scores || c.arch == Arch::kDeepseekV3) {
    // DeepseekV3TopkRouter + route_tokens_to_experts: float32 logits, sigmoid, bias for choice.
    at::Tensor logits = Linear(x.to(at::kFloat), w.at("mlp.gate.weight").to(at::kFloat));
    at::Tensor scores = c.sigmoid_scores ? logits.sigmoid() : logits.softmax(-1);
    at::Tensor choice = scores;
    if (w.tensors.count("mlp.gate.e_score_correction_bias")) {
      choice = scores + w.at("mlp.gate.e_score_correction_bias").to(at::kFloat);
    }
    const int64_t per_group = c.num_experts / c.n_group;
    at::Tensor group_scores =
        std::get<0>(choice.view({-1, c.n_group, per_group}).topk(std::min<int64_t>(2, per_group),
                                                                  -1))
            .sum(-1);
    at::Tensor group_idx = std::get<1>(group_scores.topk(c.topk_group, -1, true, false));
    at::Tensor group_mask = at::zeros_like(group_scores).scatter_(1, group_idx, 1);
    at::Tensor score_mask =
        group_mask.unsqueeze(-1).expand({n, c.n_group, per_group}).reshape({n, c.num_experts});
    at::Tensor masked = choice.masked_fill(score_mask.logical_not(), 0.0);
    topk_indices = std::get<1>(masked.topk(c.experts_per_token, -1, true, false));
    topk_weights = scores.gather(1, topk_indices);
    if (c.norm_topk_prob) topk_weights = topk_weights / (topk_weights.sum(-1, true) + 1e-20);
    topk_weights = topk_weights * c.routed_scaling_factor;
  } else {
    // Qwen3MoeTopKRouter: logits in the compute dtype, float32 softmax, top-k, renormalise.
    at::Tensor logits = Linear(x, w.at("mlp.gate.weight"));
    at::Tensor probs = at::softmax(logits, -1, at::kFloat);
    auto [values, indices] = probs.topk(c.experts_per_token, -1);
    if (c.norm_topk_prob) values = values / values.sum(-1, true);
    topk_indices = indices;
    topk_weights = values;
  }

  // Sort the (token, slot) pairs by expert once; each expert then reads a contiguous run.
  at::Tensor flat_experts = topk_indices.reshape({-1});
  at::Tensor order = flat_experts.argsort();
  at::Tensor counts = at::bincount(flat_experts, {}, c.num_experts).cpu();
  at::Tensor out;
  if (runner_ != nullptr) {
    out = runner_->Run(*this, w, x, topk_weights, order, counts, obs);
  } else {
    out = at::zeros_like(x);
    const int64_t* count = counts.data_ptr<int64_t>();
    const int64_t k = c.experts_per_token;
    int64_t start = 0;
    for (int e = 0; e < c.num_experts; ++e) {
      const int64_t m = count[e];
      at::Tensor slots = order.narrow(0, start, m);
      start += m;
      at::Tensor token_idx = at::floor_divide(slots, k);
      at::Tensor ye = ExpertMlp(w, e, x.index_select(0, token_idx), obs);
      if (m == 0) continue;
      at::Tensor weight = topk_weights.reshape({-1}).index_select(0, slots).unsqueeze(-1);
      out.index_add_(0, token_idx, (ye * weight).to(out.scalar_type()));
    }
  }
  at::Tensor result = out.view(x3.sizes());
  if (c.n_shared_experts > 0) result = result + Mlp(w, "mlp.shared_experts.", x3, obs);
  return result;
}

at::Tensor Model::ExpertMlp(const LayerWeights& w, int expert, const at::Tensor& x,
                            ForwardObserver* obs) const {
  at::Tensor y = Mlp(w, absl::StrCat("mlp.experts.", expert, "."), x, obs);
  if (obs != nullptr) obs->OnExpertOutput(w.layer, expert, y);
  return y;
}

at::Tensor Model::LayerForward(const LayerWeights& w, const at::Tensor& hidden,
                               ForwardObserver* observer) const {
  at::Tensor residual = hidden;
  at::Tensor h = RmsNorm(hidden, w.at("input_layernorm.weight"), config_.rms_norm_eps);
  h = residual + Attention(w, h, observer);
  residual = h;
  h = RmsNorm(h, w.at("post_attention_layernorm.weight"), config_.rms_norm_eps);
  h = config_.IsMoeLayer(w.layer) ? Moe(w, h, observer) : Mlp(w, "mlp.", h, observer);
  return residual + h;
}

absl::StatusOr<Model::Head> Model::LoadHead() const {
  Head head;
  ASSIGN_OR_RETURN(head.norm, ReadF32("model.norm.weight"));
  ASSIGN_OR_RETURN(head.lm_head, ReadF32("lm_head.weight"));
  if (head.lm_head.dim() != 2 || head.lm_head.size(0) != config_.vocab_size ||
      head.lm_head.size(1) != config_.hidden_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(checkpoint_->dir(), ": lm_head.weight shape does not match config.json"));
  }
  head.norm = head.norm.to(device_, scalar_type());
  head.lm_head = head.lm_head.to(device_, scalar_type());
  return head;
}

at::Tensor Model::FinalNorm(const Head& head, const at::Tensor& hidden) const {
  return RmsNorm(hidden, head.norm, config_.rms_norm_eps);
}

at::Tensor Model::Logits(const Head& head, const at::Tensor& normed) const {
  return Linear(normed, head.lm_head).to(at::kFloat);
}

absl::StatusOr<at::Tensor> Model::Forward(const at::Tensor& ids, const WeightTransform* transform,
                                          std::vector<at::Tensor>* hidden_states) const {
  ASSIGN_OR_RETURN(at::Tensor h, Embed(ids));
  if (hidden_states) hidden_states->push_back(h);
  for (int layer = 0; layer < config_.num_layers; ++layer) {
    ASSIGN_OR_RETURN(LayerWeights w, LoadLayer(layer, transform));
    h = LayerForward(w, h, nullptr);
    if (hidden_states && layer + 1 < config_.num_layers) hidden_states->push_back(h);
  }
  ASSIGN_OR_RETURN(Head head, LoadHead());
  at::Tensor normed = FinalNorm(head, h);
  if (hidden_states) hidden_states->push_back(normed);
  return Logits(head, normed);
}

}  // namespace quant::model
