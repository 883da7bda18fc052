// Fuzz target for SLQ's outside-input files: arbitrary bytes -> the probe-cache parser and the
// allocation parser must return a value or an error, never crash; what they accept round-trips
// (cache) or names one candidate per unit (allocation).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "job/slq_files.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace quant::tasks;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto cache = ParseProbeCache(text, "fuzz");
  if (cache.ok()) {
    auto again = ParseProbeCache(SerializeProbeCache(*cache), "fuzz");
    if (!again.ok() || again->size() != cache->size()) {
      std::fprintf(stderr, "probe cache does not round-trip\n");
      std::abort();
    }
  }
  const std::vector<SlqUnitTable> table = {
      {"model.layers.0.mlp.experts.gate_up", 1000, {2, 4}, {0.02, 0.001}},
      {"model.layers.0.mlp.experts.down_proj", 500, {3, 4}, {0.005, 0.001}}};
  auto allocation = ParseAllocation(text, "fuzz", table);
  if (allocation.ok()) {
    if (allocation->bits.size() != table.size() ||
        (allocation->bits[0] != 2 && allocation->bits[0] != 4) ||
        (allocation->bits[1] != 3 && allocation->bits[1] != 4)) {
      std::fprintf(stderr, "accepted an allocation outside the candidates\n");
      std::abort();
    }
  }
  return 0;
}
