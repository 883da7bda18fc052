// Which tensors of a checkpoint a job quantizes (the `scope` of README's RTN anchor table),
// decided from Hugging Face tensor names alone.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace quant::quant {

enum class Scope {
  kExperts,  // routed experts' linears only: "...mlp.experts.<n>.<linear>.weight"
  kAll,      // every linear inside attention and MLP blocks, routed and shared experts included
};

// True when `tensor_name` is a weight the scope quantizes. kAll takes the ".weight" of every
// "*_proj" (and "kv_a_proj_with_mqa") module under a "self_attn" or "mlp" module: attention
// q/k/v/o, MLA q_a/q_b/kv_a/kv_b, dense MLP and shared-expert gate/up/down, routed experts.
// Never the router ("mlp.gate.weight"), embeddings, lm_head, norms, or tensors beside a weight
// (fp8 "weight_scale_inv", "e_score_correction_bias"). DeepSeek's multi-token-prediction
// "eh_proj" sits outside attention/MLP blocks and is left out with the heads. The caller still
// checks that the tensor is 2-D.
bool InQuantScope(const std::string& tensor_name, Scope scope);

// "experts" -> kExperts, "all" -> kAll; InvalidArgument naming the bad value otherwise.
absl::StatusOr<Scope> ParseScope(std::string_view text);

// The inverse of ParseScope: "experts" or "all".
std::string_view ScopeName(Scope scope);

}  // namespace quant::quant
