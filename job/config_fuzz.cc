// Fuzz target for config.json parsing: arbitrary bytes -> JSON -> ModelConfig::FromJson must
// return a config or an error, never crash; accepted configs satisfy the invariants the forward
// pass relies on.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "job/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  auto c = quant::model::ModelConfig::FromJson(j, "fuzz/config.json");
  if (!c.ok()) return 0;
  const bool sane = c->hidden_size > 0 && c->num_layers > 0 && c->num_heads > 0 &&
                    c->num_kv_heads > 0 && c->num_heads % c->num_kv_heads == 0 &&
                    c->rope.dim % 2 == 0 &&
                    (c->num_experts == 0 || c->experts_per_token <= c->num_experts);
  if (!sane) {
    std::fprintf(stderr, "accepted an inconsistent config\n");
    std::abort();
  }
  return 0;
}
