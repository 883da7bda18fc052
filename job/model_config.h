// Model architecture parameters read from a Hugging Face config.json (never hard-coded to the
// shared shapes): DeepSeek-V3 / Kimi-K2 (MLA, YaRN, grouped sigmoid routing) and Qwen3-MoE.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace quant::model {

enum class Arch { kDeepseekV3, kQwen3Moe };

struct RopeConfig {
  double theta = 10000.0;
  int dim = 0;                 // rotary dims per head
  bool interleave = false;     // DeepSeek's rope_interleave: pairs (2i, 2i+1) instead of halves
  bool yarn = false;
  double factor = 1.0;         // rope_scaling.factor (not max_pos / original_max_pos)
  int original_max_position = 0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 0.0;         // 0: absent
  double mscale_all_dim = 0.0; // 0: absent
  double attention_factor = 0.0;  // 0: absent, derived from mscale/mscale_all_dim
  bool truncate = true;
};

struct ModelConfig {
  Arch arch = Arch::kQwen3Moe;
  std::string model_type;
  int vocab_size = 0;
  int hidden_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;            // Qwen3: q/k/v head dim
  double rms_norm_eps = 1e-6;
  int intermediate_size = 0;   // dense MLP
  RopeConfig rope;

  // MLA (DeepSeek-V3).
  int q_lora_rank = 0;         // 0: plain q_proj
  int kv_lora_rank = 0;
  int qk_nope_head_dim = 0;
  int qk_rope_head_dim = 0;
  int v_head_dim = 0;

  // MoE.
  int num_experts = 0;
  int experts_per_token = 0;
  int moe_intermediate_size = 0;
  bool norm_topk_prob = true;
  int n_shared_experts = 0;
  double routed_scaling_factor = 1.0;
  int n_group = 1;
  int topk_group = 1;
  bool sigmoid_scores = false;  // DeepSeek: sigmoid + e_score_correction_bias; Qwen: softmax
  int first_k_dense_replace = 0;
  int moe_layer_freq = 1;
  int decoder_sparse_step = 1;  // Qwen3
  std::vector<int> mlp_only_layers;

  bool IsMoeLayer(int layer) const;
  // Softmax scale of attention scores (DeepSeek: qk_head_dim^-0.5 times YaRN mscale^2).
  double AttentionScale() const;
  int QkHeadDim() const { return qk_nope_head_dim + qk_rope_head_dim; }

  // Parses and validates; errors name `label` (the file) and the field.
  static absl::StatusOr<ModelConfig> FromJson(const nlohmann::json& config, std::string_view label);
};

}  // namespace quant::model
