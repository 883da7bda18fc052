// Scope rules on the official tensor names of DeepSeek-V3 (and Kimi-K2) and Qwen3-MoE.
#include "job/scope.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace quant::quant {
namespace {

using ::testing::HasSubstr;

struct NameCase {
  std::string name;
  bool in_experts;
  bool in_all;
};

const std::vector<NameCase>& Cases() {
  static const std::vector<NameCase> cases = {
      // DeepSeek-V3 / Kimi-K2: MLA attention.
      {"model.layers.0.self_attn.q_a_proj.weight", false, true},
      {"model.layers.0.self_attn.q_b_proj.weight", false, true},
      {"model.layers.0.self_attn.kv_a_proj_with_mqa.weight", false, true},
      {"model.layers.0.self_attn.kv_b_proj.weight", false, true},
      {"model.layers.0.self_attn.o_proj.weight", false, true},
      {"model.layers.0.self_attn.q_a_layernorm.weight", false, false},
      {"model.layers.0.self_attn.kv_a_layernorm.weight", false, false},
      // Dense first layer.
      {"model.layers.0.mlp.gate_proj.weight", false, true},
      {"model.layers.0.mlp.up_proj.weight", false, true},
      {"model.layers.0.mlp.down_proj.weight", false, true},
      // MoE layer: routed experts, shared expert, router and its bias.
      {"model.layers.1.mlp.experts.0.gate_proj.weight", true, true},
      {"model.layers.1.mlp.experts.15.up_proj.weight", true, true},
      {"model.layers.60.mlp.experts.383.down_proj.weight", true, true},
      {"model.layers.1.mlp.shared_experts.gate_proj.weight", false, true},
      {"model.layers.1.mlp.shared_experts.down_proj.weight", false, true},
      {"model.layers.1.mlp.gate.weight", false, false},
      {"model.layers.1.mlp.gate.e_score_correction_bias", false, false},
      // fp8 checkpoints keep a block scale beside each weight: not a weight itself.
      {"model.layers.1.mlp.experts.0.gate_proj.weight_scale_inv", false, false},
      {"model.layers.0.self_attn.o_proj.weight_scale_inv", false, false},
      // Norms, embeddings, head.
      {"model.layers.1.input_layernorm.weight", false, false},
      {"model.layers.1.post_attention_layernorm.weight", false, false},
      {"model.norm.weight", false, false},
      {"model.embed_tokens.weight", false, false},
      {"lm_head.weight", false, false},
      // DeepSeek's multi-token-prediction projection sits outside attention/MLP blocks.
      {"model.layers.61.eh_proj.weight", false, false},
      // Qwen3-MoE.
      {"model.layers.3.self_attn.q_proj.weight", false, true},
      {"model.layers.3.self_attn.k_proj.weight", false, true},
      {"model.layers.3.self_attn.v_proj.weight", false, true},
      {"model.layers.3.self_attn.o_proj.weight", false, true},
      {"model.layers.3.self_attn.q_norm.weight", false, false},
      {"model.layers.3.self_attn.k_norm.weight", false, false},
      {"model.layers.3.mlp.experts.31.down_proj.weight", true, true},
      {"model.layers.3.mlp.gate.weight", false, false},
      // Not weights, or malformed expert paths.
      {"model.layers.1.mlp.experts.0.gate_proj.bias", false, false},
      {"model.layers.1.mlp.experts.x.gate_proj.weight", false, true},
      {"weight", false, false},
      {"", false, false},
  };
  return cases;
}

TEST(ScopeTest, ExpertsAndAll) {
  for (const NameCase& c : Cases()) {
    EXPECT_EQ(InQuantScope(c.name, Scope::kExperts), c.in_experts) << c.name;
    EXPECT_EQ(InQuantScope(c.name, Scope::kAll), c.in_all) << c.name;
  }
}

TEST(ScopeTest, ExpertsIsSubsetOfAll) {
  for (const NameCase& c : Cases()) {
    if (InQuantScope(c.name, Scope::kExperts)) {
      EXPECT_TRUE(InQuantScope(c.name, Scope::kAll)) << c.name;
    }
  }
}

TEST(ScopeTest, ParseRoundTrips) {
  for (Scope scope : {Scope::kExperts, Scope::kAll}) {
    const absl::StatusOr<Scope> parsed = ParseScope(ScopeName(scope));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, scope);
  }
}

TEST(ScopeTest, ParseRejectsOtherStrings) {
  for (const char* text : {"", "expert", "ALL", "All", "routed", "experts "}) {
    const absl::StatusOr<Scope> parsed = ParseScope(text);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("experts")) << text;
  }
}

}  // namespace
}  // namespace quant::quant
