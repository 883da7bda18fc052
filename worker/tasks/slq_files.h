// SLQ's two outside-input files, parsed without torch (and fuzzed): the probe cache
// ({"probes": {unit: {bits: {"kl": x, "ear_loss": y}}}}) and a fixed allocation ({unit: bits}).
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/tasks/quantize_job.h"

namespace quant::tasks {

struct ProbeScore {
  double kl = 0;        // mean KL(original || probed) per position, nats
  double ear_loss = 0;  // 1 - mean EAR
};
using ProbeTable = std::map<std::string, std::map<int, ProbeScore>>;  // unit -> bits -> score

// The EAR model of the target mode. Summed 1 - EAR over units overstates a combination's loss
// (EAR saturates) while KL adds up, and per position 1 - EAR (total variation) scales with the
// square root of KL: so predicted 1 - EAR = c * sqrt(sum of the units' KL), with c the upper
// quartile of ear_loss / sqrt(kl) over the probes at each unit's two lowest candidate bitwidths
// (the largest perturbations, nearest the combined one; the upper quartile rather than the median
// so that an EAR target holds more often than not). Checked on real allocations in
// docs/results.md. Returns 0 when no probe has kl > 0.
double EarPerRootKl(const ProbeTable& probes, const std::vector<int>& candidate_bits);

// `label` names the file in errors.
absl::StatusOr<ProbeTable> ParseProbeCache(std::string_view text, const std::string& label);
std::string SerializeProbeCache(const ProbeTable& table);

// Every unit of `table` must get one of its candidate bitwidths, and no other unit may appear.
absl::StatusOr<SlqAllocation> ParseAllocation(std::string_view text, const std::string& label,
                                              const std::vector<SlqUnitTable>& table);

}  // namespace quant::tasks
