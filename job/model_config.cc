// Parsing of config.json into ModelConfig, with the checks a user needs when a field is off.
#include "job/model_config.h"

#include <cmath>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace quant::model {
namespace {

using nlohmann::json;

absl::Status FieldError(const std::string& label, const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(label, ": field '", field, "' ", what));
}

absl::StatusOr<int> GetInt(const json& j, const std::string& label, const std::string& key,
                           std::optional<int> fallback, int min_value = 1) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (fallback) return *fallback;
    return FieldError(label, key, "is missing");
  }
  if (!it->is_number_integer()) return FieldError(label, key, "is not an integer");
  const int64_t v = it->get<int64_t>();
  if (v < min_value || v > (int64_t{1} << 30)) {
    return FieldError(label, key, absl::StrCat("is out of range: ", v));
  }
  return static_cast<int>(v);
}

absl::StatusOr<double> GetDouble(const json& j, const std::string& label, const std::string& key,
                                 std::optional<double> fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (fallback) return *fallback;
    return FieldError(label, key, "is missing");
  }
  if (!it->is_number()) return FieldError(label, key, "is not a number");
  const double v = it->get<double>();
  if (!std::isfinite(v)) return FieldError(label, key, "is not finite");
  return v;
}

bool hidden_act_ok(const json& j) {
  auto it = j.find("hidden_act");
  return it == j.end() || (it->is_string() && it->get<std::string>() == "silu");
}

bool GetBool(const json& j, const std::string& key, bool fallback) {
  auto it = j.find(key);
  return (it != j.end() && it->is_boolean()) ? it->get<bool>() : fallback;
}

absl::Status ParseRopeScaling(const json& j, const std::string& label, ModelConfig& c) {
  auto it = j.find("rope_scaling");
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) return FieldError(label, "rope_scaling", "is not an object");
  const json& rs = *it;
  std::string type = rs.value("type", rs.value("rope_type", std::string("default")));
  if (type == "default") return absl::OkStatus();
  if (type != "yarn") {
    return FieldError(label, "rope_scaling.type", absl::StrCat("'", type, "' is not supported"));
  }
  RopeConfig& r = c.rope;
  r.yarn = true;
  ASSIGN_OR_RETURN(r.factor, GetDouble(rs, label, "factor", std::nullopt));
  if (r.factor <= 0) return FieldError(label, "rope_scaling.factor", "must be positive");
  ASSIGN_OR_RETURN(r.original_max_position,
                   GetInt(rs, label, "original_max_position_embeddings",
                          j.value("max_position_embeddings", 0) > 0
                              ? std::optional<int>(j["max_position_embeddings"].get<int>())
                              : std::nullopt));
  ASSIGN_OR_RETURN(r.beta_fast, GetDouble(rs, label, "beta_fast", 32.0));
  ASSIGN_OR_RETURN(r.beta_slow, GetDouble(rs, label, "beta_slow", 1.0));
  ASSIGN_OR_RETURN(r.mscale, GetDouble(rs, label, "mscale", 0.0));
  ASSIGN_OR_RETURN(r.mscale_all_dim, GetDouble(rs, label, "mscale_all_dim", 0.0));
  ASSIGN_OR_RETURN(r.attention_factor, GetDouble(rs, label, "attention_factor", 0.0));
  r.truncate = GetBool(rs, "truncate", true);
  if (rs.contains("rope_theta") && rs["rope_theta"].is_number()) r.theta = rs["rope_theta"];
  return absl::OkStatus();
}

}  // namespace

bool ModelConfig::IsMoeLayer(int layer) const {
  if (num_experts <= 0) return false;
  if (arch == Arch::kDeepseekV3) {
    return layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }
  for (int l : mlp_only_layers) {
    if (l == layer) return false;
  }
  return (layer + 1) % decoder_sparse_step == 0;
}

// transformers' yarn_get_mscale: 0.1 * mscale * ln(scale) + 1 for scale > 1.
static double YarnMscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

double ModelConfig::AttentionScale() const {
  if (arch == Arch::kQwen3Moe) return 1.0 / std::sqrt(static_cast<double>(head_dim));
  double scale = 1.0 / std::sqrt(static_cast<double>(QkHeadDim()));
  if (rope.yarn && rope.mscale_all_dim != 0.0) {
    const double m = YarnMscale(rope.factor, rope.mscale_all_dim);
    scale *= m * m;
  }
  return scale;
}

absl::StatusOr<ModelConfig> ModelConfig::FromJson(const json& j, std::string_view label_view) {
  const std::string label(label_view);
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(label, ": not a JSON object"));
  ModelConfig c;
  std::string arch_name;
  if (auto it = j.find("architectures"); it != j.end() && it->is_array() && !it->empty() &&
                                         (*it)[0].is_string()) {
    arch_name = (*it)[0].get<std::string>();
  }
  c.model_type = j.value("model_type", std::string());
  if (arch_name == "DeepseekV3ForCausalLM" || c.model_type == "deepseek_v3" ||
      c.model_type == "kimi_k2") {
    c.arch = Arch::kDeepseekV3;
  } else if (arch_name == "Qwen3MoeForCausalLM" || c.model_type == "qwen3_moe") {
    c.arch = Arch::kQwen3Moe;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        label, ": unknown architecture '", arch_name.empty() ? c.model_type : arch_name,
        "' (supported: DeepseekV3ForCausalLM, Qwen3MoeForCausalLM)"));
  }
  ASSIGN_OR_RETURN(c.vocab_size, GetInt(j, label, "vocab_size", std::nullopt));
  ASSIGN_OR_RETURN(c.hidden_size, GetInt(j, label, "hidden_size", std::nullopt));
  ASSIGN_OR_RETURN(c.num_layers, GetInt(j, label, "num_hidden_layers", std::nullopt));
  ASSIGN_OR_RETURN(c.num_heads, GetInt(j, label, "num_attention_heads", std::nullopt));
  // Read (and checked) only where the architecture uses it: DeepSeek-V3/Kimi-K2 attention is
  // MLA, with no key/value heads of its own, and transformers loads and runs such a config
  // whatever its num_key_value_heads says.
  c.num_kv_heads = c.num_heads;
  ASSIGN_OR_RETURN(c.rms_norm_eps, GetDouble(j, label, "rms_norm_eps", 1e-6));
  ASSIGN_OR_RETURN(c.intermediate_size, GetInt(j, label, "intermediate_size", std::nullopt));
  ASSIGN_OR_RETURN(c.rope.theta, GetDouble(j, label, "rope_theta", 10000.0));
  if (hidden_act_ok(j) == false) {
    return FieldError(label, "hidden_act", "must be 'silu'");
  }

  if (c.arch == Arch::kDeepseekV3) {
    ASSIGN_OR_RETURN(c.q_lora_rank, GetInt(j, label, "q_lora_rank", 0, 0));
    ASSIGN_OR_RETURN(c.kv_lora_rank, GetInt(j, label, "kv_lora_rank", std::nullopt));
    ASSIGN_OR_RETURN(c.qk_nope_head_dim, GetInt(j, label, "qk_nope_head_dim", std::nullopt));
    ASSIGN_OR_RETURN(c.qk_rope_head_dim, GetInt(j, label, "qk_rope_head_dim", std::nullopt));
    ASSIGN_OR_RETURN(c.v_head_dim, GetInt(j, label, "v_head_dim", std::nullopt));
    ASSIGN_OR_RETURN(c.num_experts, GetInt(j, label, "n_routed_experts", 0, 0));
    ASSIGN_OR_RETURN(c.n_shared_experts, GetInt(j, label, "n_shared_experts", 0, 0));
    ASSIGN_OR_RETURN(c.routed_scaling_factor, GetDouble(j, label, "routed_scaling_factor", 1.0));
    ASSIGN_OR_RETURN(c.n_group, GetInt(j, label, "n_group", 1));
    ASSIGN_OR_RETURN(c.topk_group, GetInt(j, label, "topk_group", 1));
    ASSIGN_OR_RETURN(c.first_k_dense_replace, GetInt(j, label, "first_k_dense_replace", 0, 0));
    ASSIGN_OR_RETURN(c.moe_layer_freq, GetInt(j, label, "moe_layer_freq", 1));
    const std::string scoring = j.value("scoring_func", std::string("sigmoid"));
    if (scoring != "sigmoid" && scoring != "softmax") {
      return FieldError(label, "scoring_func", absl::StrCat("'", scoring, "' is not supported"));
    }
    c.sigmoid_scores = scoring == "sigmoid";
    c.rope.dim = c.qk_rope_head_dim;
    c.rope.interleave = GetBool(j, "rope_interleave", true);
    c.head_dim = c.QkHeadDim();
  } else {
    ASSIGN_OR_RETURN(c.num_kv_heads, GetInt(j, label, "num_key_value_heads", c.num_heads));
    ASSIGN_OR_RETURN(c.head_dim, GetInt(j, label, "head_dim", c.hidden_size / c.num_heads));
    ASSIGN_OR_RETURN(c.num_experts, GetInt(j, label, "num_experts", 0, 0));
    ASSIGN_OR_RETURN(c.decoder_sparse_step, GetInt(j, label, "decoder_sparse_step", 1));
    if (auto it = j.find("mlp_only_layers"); it != j.end() && it->is_array()) {
      for (const json& v : *it) {
        if (!v.is_number_integer()) return FieldError(label, "mlp_only_layers", "holds a non-integer");
        c.mlp_only_layers.push_back(v.get<int>());
      }
    }
    c.sigmoid_scores = false;
    c.rope.dim = c.head_dim;
    c.rope.interleave = false;
  }
  if (c.num_experts > 0) {
    ASSIGN_OR_RETURN(c.experts_per_token, GetInt(j, label, "num_experts_per_tok", std::nullopt));
    ASSIGN_OR_RETURN(c.moe_intermediate_size, GetInt(j, label, "moe_intermediate_size", std::nullopt));
    c.norm_topk_prob = GetBool(j, "norm_topk_prob", c.arch == Arch::kDeepseekV3);
    if (c.experts_per_token > c.num_experts) {
      return FieldError(label, "num_experts_per_tok", "exceeds the number of experts");
    }
    if (c.num_experts % c.n_group != 0 || c.topk_group > c.n_group) {
      return FieldError(label, "n_group", "does not divide the experts or is below topk_group");
    }
  }
  if (c.num_heads % c.num_kv_heads != 0) {
    return FieldError(label, "num_key_value_heads", "does not divide num_attention_heads");
  }
  if (c.rope.dim % 2 != 0) return FieldError(label, "rope dim", "must be even");
  RETURN_IF_ERROR(ParseRopeScaling(j, label, c));
  return c;
}

}  // namespace quant::model
