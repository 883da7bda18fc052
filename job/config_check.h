// config.json against the tensors a checkpoint's index holds, checked when the model is opened:
// a config that disagrees with its weights fails there, naming the field, rather than inside a
// task, or after planning per claimed layer (num_hidden_layers 1e9 grew qctl to 23 GB).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "storage/checkpoint.h"
#include "job/model_config.h"

namespace quant::model {

// Checks, against checkpoint.Names() and their shapes:
// - num_hidden_layers: the index holds tensors of every layer 0..N-1 and of no later one (but
//   for num_nextn_predict_layers multi-token-prediction layers after them, as DeepSeek-V3 ships);
// - n_routed_experts (DeepSeek) / num_experts (Qwen): every MoE layer holds experts 0..E-1 and
//   no other; dense layers hold none (else first_k_dense_replace / moe_layer_freq or
//   mlp_only_layers / decoder_sparse_step are named);
// - hidden_size, vocab_size, intermediate_size, moe_intermediate_size, n_shared_experts: the
//   shapes of the embeddings, lm_head, norms, routers and MLP projections present.
// Tensors that are missing altogether are left to the model's own checks. One pass over the
// names; memory follows the tensors present, never the counts the config claims.
// InvalidArgument "<label>: field '<name>' ..." on the first disagreement.
absl::Status CheckConfigMatchesCheckpoint(const ModelConfig& config,
                                          const storage::Checkpoint& checkpoint,
                                          const std::string& label);

// ModelConfig::FromJson of the checkpoint's config.json, then CheckConfigMatchesCheckpoint:
// what every open of a model (planning, running, the coordinator's Submit) goes through.
absl::StatusOr<ModelConfig> ReadModelConfig(const storage::Checkpoint& checkpoint);

}  // namespace quant::model
