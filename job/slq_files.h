// SLQ's two outside-input files, parsed without torch (and fuzzed): the probe cache
// ({"probes": {unit: {bits: {"kl": x, "ear_loss": y}}}}) and a fixed allocation ({unit: bits}).
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "job/job_spec.h"
#include "job/slq_tables.h"

namespace quant::tasks {

struct ProbeScore {
  double kl = 0;        // mean KL(original || probed) per position, nats
  double ear_loss = 0;  // 1 - mean EAR
};
using ProbeTable = std::map<std::string, std::map<int, ProbeScore>>;  // unit -> bits -> score

// The EAR model of the solve. Summed 1 - EAR over units overstates a combination's loss (EAR
// saturates); the units' losses add in quadrature instead, like independent errors:
// predicted 1 - EAR = kEarMargin * sqrt(sum over units of ear_loss_u^2). Checked on 40 random
// allocations quantized for real (docs/results.md): measured / sqrt(sum) = 1.03-1.11, so the
// margin 1.1 makes an EAR target hold in nearly every case measured. The sum of squares is
// additive, so the target mode solves it exactly like KL.
inline constexpr double kEarMargin = 1.1;
double PredictedEarLoss(double sum_of_squared_ear_losses);

// `label` names the file in errors.
absl::StatusOr<ProbeTable> ParseProbeCache(std::string_view text, const std::string& label);
std::string SerializeProbeCache(const ProbeTable& table);

// Every unit of `table` must get one of its candidate bitwidths, and no other unit may appear.
absl::StatusOr<SlqAllocation> ParseAllocation(std::string_view text, const std::string& label,
                                              const std::vector<SlqUnitTable>& table);

}  // namespace quant::tasks
